"""Test helpers that stand in for external services on loopback."""
