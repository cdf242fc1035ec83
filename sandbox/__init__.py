"""A local GitHub for kohai's tests and demo: REST, GraphQL, git and webhooks.

`sandbox.server.SandboxServer` runs it in-process, `sandbox.control.SandboxControl`
acts as its human users, `sandbox.cli` is `kohai sandbox`. It imports nothing
of kohai's: it stands for GitHub.
"""
