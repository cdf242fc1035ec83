"""kohai's core: configuration, store, routing, engine, outbox, GitHub client, statistics.

This package's top level imports nothing heavy, so that the host side can use
the problem contract (`bot.problem`) and the job protocol (`bot.protocol`)
without installing the server's dependencies.
"""

__version__ = "0.1.0"
