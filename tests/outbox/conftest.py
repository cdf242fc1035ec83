"""Fixtures: the App client against respx's mock of GitHub (tests/support/github_mock.py)."""

from tests.support.github_mock import fake_time, gh_mock, github, private_pem, rsa_key, store

__all__ = ["fake_time", "gh_mock", "github", "private_pem", "rsa_key", "store"]
