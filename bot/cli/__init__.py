"""`kohai`: the one command line, wiring the parts together.

Each subcommand's work lives in the module that owns it; this file only
parses arguments and imports that module when the subcommand runs, so that a
GPU host running `kohai host run` never imports the server's dependencies.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# subcommand path -> "module:function"; the function takes the parsed Namespace
# and returns an exit code.
HANDLERS: dict[str, str] = {
    "demo": "bot.cli.demo:main",
    "serve": "bot.cli.serve:main",
    "sandbox": "sandbox.cli:main",
    "hosts add": "bot.cli.hosts:add",
    "hosts list": "bot.cli.hosts:list_hosts",
    "host run": "trainer.daemon:main",
    "train": "trainer.cli:train_main",
    "init": "trainer.cli:init_main",
    "status": "bot.cli.history:status_main",
    "history": "bot.cli.history:history_main",
    "deploy k8s": "bot.cli.deploy:k8s_main",
    "app manifest": "bot.cli.deploy:manifest_main",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kohai", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="run a short research session end to end on this machine")
    demo.add_argument(
        "--experiments", type=int, default=4, help="experiments to finish (default 4)"
    )
    demo.add_argument("--budget", default="20s", help="training budget per run (default 20s)")
    demo.add_argument("--students", type=int, default=2, help="local students (default 2)")
    demo.add_argument(
        "--labs",
        type=int,
        default=2,
        choices=(1, 2),
        help="labs: the reference problem, and a wider model weighted 2 (default 2)",
    )
    demo.add_argument("--keep-serving", action="store_true", help="leave the dashboard up")
    demo.add_argument("--dir", default=None, help="work directory (default: a new temporary one)")
    demo.add_argument("--port", type=int, default=0, help="bot port (default: a free one)")

    serve = sub.add_parser("serve", help="the bot server: webhooks, host API, dashboard, workers")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)

    sandbox = sub.add_parser("sandbox", help="the local GitHub sandbox")
    sandbox.add_argument("--port", type=int, default=9000)
    sandbox.add_argument("--host", default="127.0.0.1")
    sandbox.add_argument(
        "--data", default="sandbox-data", help="state directory (survives restarts)"
    )
    sandbox.add_argument("--webhook-url", default="http://127.0.0.1:8000/webhooks/github")
    sandbox.add_argument("--repo", default="lab/charlm", help="repository to create (OWNER/NAME)")
    sandbox.add_argument("--from", dest="from_path", default=None, help="problem repo to import")
    sandbox.add_argument(
        "--rate-limit",
        type=int,
        default=5000,
        help="REST requests per hour per installation (GitHub: 5000; 0: no limit)",
    )
    sandbox.add_argument(
        "--secondary-limit",
        type=int,
        default=0,
        help="content-creating requests per minute per caller (GitHub: 80; 0: no limit)",
    )

    hosts = sub.add_parser("hosts", help="registered students and their hosts")
    hosts_sub = hosts.add_subparsers(dest="hosts_command", required=True, metavar="ACTION")
    add = hosts_sub.add_parser("add", help="register a student; prints its token once")
    add.add_argument("name")
    add.add_argument("--gpus", type=int, default=0)
    add.add_argument(
        "--labs",
        default=None,
        metavar="OWNER/REPO[:TRACK],...",
        help="the labs this student may serve (default: all)",
    )
    hosts_sub.add_parser("list", help="registered students")

    host = sub.add_parser("host", help="the GPU host side")
    host_sub = host.add_subparsers(dest="host_command", required=True, metavar="ACTION")
    run = host_sub.add_parser("run", help="the host daemon: lease jobs, implement, train, report")
    run.add_argument("--name", help="student name (one student)")
    run.add_argument("--token", help="the student's host token")
    run.add_argument("--gpus", default="", help="GPU ids for --name, e.g. 0,1")
    run.add_argument(
        "--student",
        action="append",
        default=[],
        metavar="NAME:GPUS:TOKEN",
        help="several students on one host, e.g. fern:0,1:TOKEN (repeatable)",
    )
    run.add_argument("--bot-url", required=True)
    run.add_argument("--work-dir", default=None, help="repo cache and worktrees")
    run.add_argument(
        "--unsandboxed",
        action="store_true",
        help="run jobs without the bubblewrap sandbox where it cannot start; "
        'every result then says "unsandboxed"',
    )

    train = sub.add_parser("train", help="one training run of a problem repo under the harness")
    train.add_argument("path", nargs="?", default=".")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--budget", default=None, help="override the budget, e.g. 30s")
    train.add_argument(
        "--unsandboxed",
        action="store_true",
        help="train without the bubblewrap job sandbox; the result says so",
    )

    init = sub.add_parser("init", help="scaffold a problem repo from the reference problem")
    init.add_argument("path")

    status = sub.add_parser("status", help="experiments, students, queue")
    status.add_argument("--json", action="store_true")
    status.add_argument(
        "--repo",
        metavar="OWNER/NAME[:TRACK]",
        help="the lab, or one track of it (default: the only lab)",
    )

    history = sub.add_parser("history", help="every run ever")
    history.add_argument("--best", action="store_true", help="only runs that improved the best")
    history.add_argument(
        "--repo",
        metavar="OWNER/NAME[:TRACK]",
        help="the lab, or one track of it (default: the only lab)",
    )
    history.add_argument("--export", metavar="FILE", help="write .tsv, .csv or .json")

    deploy = sub.add_parser("deploy", help="render deployment manifests")
    deploy_sub = deploy.add_subparsers(dest="deploy_command", required=True, metavar="TARGET")
    k8s = deploy_sub.add_parser("k8s", help="Kubernetes manifests for the bot and the fleet")
    k8s.add_argument("--students", type=int, default=2)
    k8s.add_argument("--gpus-per-student", type=int, default=1)
    k8s.add_argument("--image", default="ghcr.io/kohai/kohai")
    k8s.add_argument("--namespace", default="kohai")
    k8s.add_argument("--dry-run", action="store_true", help="print instead of applying")

    app = sub.add_parser("app", help="the GitHub App")
    app_sub = app.add_subparsers(dest="app_command", required=True, metavar="ACTION")
    manifest = app_sub.add_parser("manifest", help="print the GitHub App manifest")
    manifest.add_argument("--url", default="https://kohai.example.com", help="the bot's public URL")
    manifest.add_argument("--name", default="kohai")
    return parser


def _handler_key(args: argparse.Namespace) -> str:
    parts = [args.command]
    for attr in ("hosts_command", "host_command", "deploy_command", "app_command"):
        value = getattr(args, attr, None)
        if value:
            parts.append(value)
    return " ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    module_name, func_name = HANDLERS[_handler_key(args)].split(":")
    handler = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
