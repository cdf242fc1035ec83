"""The GPU host side of kohai: the run harness, metrics, git workspace, W&B and the daemon.

Runs without the server's dependencies: from kohai it imports only
`bot.problem` and `bot.protocol`, and reaches the bot over HTTP.
"""
