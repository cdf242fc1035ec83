"""The one door to GitHub: the App client (auth, retries, pacing), and what reads
through it (preflight, sync, catch-up, permissions, bundles)."""
