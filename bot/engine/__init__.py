"""Applying intents to the store: experiments, the job queue and leases, reviews,
the inbox, scheduling between labs."""
