"""`kohai`: the one command line, wiring the parts together.

Each subcommand's work lives in the module that owns it; this file only
parses arguments and imports that module when the subcommand runs, so that a
GPU host running `kohai host run` never imports the server's dependencies.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback
from collections.abc import Sequence

from bot import __version__
from bot.cli.common import CliError
from bot.gpus import HELP as GPUS_HELP

# subcommand path -> "module:function"; the function takes the parsed Namespace
# and returns an exit code. A new command adds its parser in `build_parser` and
# its handler here.
HANDLERS: dict[str, str] = {
    "demo": "bot.cli.demo:main",
    "serve": "bot.cli.serve:main",
    "sandbox": "sandbox.cli:main",
    "hosts add": "bot.cli.hosts:add",
    "hosts rotate": "bot.cli.hosts:rotate",
    "hosts list": "bot.cli.hosts:list_hosts",
    "host run": "trainer.daemon:main",
    "train": "trainer.cli:train_main",
    "init": "trainer.cli:init_main",
    "check": "bot.cli.check:check_main",
    "schema": "bot.cli.check:schema_main",
    "status": "bot.cli.history:status_main",
    "history": "bot.cli.history:history_main",
    "report": "bot.cli.history:report_main",
    "deploy k8s": "bot.cli.deploy:k8s_main",
    "app manifest": "bot.cli.deploy:manifest_main",
    "setup": "bot.cli.setup:main",
}

# What each command reads from the environment, shown under its --help.
DB_ENV = {"KOHAI_DB": "the bot's SQLite database (default kohai.db)"}
SERVE_ENV = {
    "KOHAI_GITHUB_APP_ID": "the GitHub App's id (required)",
    "KOHAI_GITHUB_PRIVATE_KEY_PATH": "the App's private key file (or KOHAI_GITHUB_PRIVATE_KEY)",
    "KOHAI_GITHUB_PRIVATE_KEY": "the App's private key as PEM text",
    "KOHAI_WEBHOOK_SECRET": "the App's webhook secret (required)",
    "KOHAI_GITHUB_API_URL": "GitHub's REST API (default https://api.github.com)",
    "KOHAI_GITHUB_HTML_URL": "GitHub's web host for links (default: from the API URL)",
    **DB_ENV,
    "KOHAI_PUBLIC_URL": "where hosts and links reach the bot (default http://127.0.0.1:8000)",
    "KOHAI_APP_FILE": "the App file `kohai setup` wrote (default ~/.config/kohai/app.toml)",
    "KOHAI_WEBHOOK_PROXY_URL": "a smee-compatible channel to receive webhooks from",
    "KOHAI_GITHUB_CLIENT_ID": "the App's OAuth client id (dashboard sign-in)",
    "KOHAI_GITHUB_CLIENT_SECRET": "the App's OAuth client secret (dashboard sign-in)",
    "KOHAI_SESSION_SECRET": "signs the dashboard's session cookies",
    "KOHAI_DASHBOARD_PUBLIC": "1: the dashboard without sign-in (local demo)",
    "KOHAI_MAX_BODY_BYTES": "the largest request body the bot reads",
    "KOHAI_ALPHA": "the merge gate's significance level (default 0.05)",
    "KOHAI_PLATEAU_AFTER": "experiments without a merge before the advisor widens (default 5)",
    "KOHAI_MAX_EXPERIMENTS": "advisor experiments per lab (default 0: no limit)",
    "KOHAI_ADVISOR": "off: no advisor proposals or reviews",
    "KOHAI_CATCH_UP": "off: no redelivery of missed webhooks",
    "ANTHROPIC_API_KEY": "the Claude advisor (absent: the offline advisor)",
    "WANDB_API_KEY": "W&B logging (absent: offline runs)",
    "KOHAI_LOG": "the log level (default INFO)",
}
HOST_ENV = {
    "KOHAI_HOST_TOKEN": "the host token `kohai hosts add` printed (with --name)",
    "KOHAI_HOST_DIR": "the work directory (default ~/.kohai/host; --work-dir)",
    "KOHAI_SHUTDOWN_GRACE_S": "on SIGTERM, seconds running jobs get to finish (default 20)",
    "KOHAI_BOT_WAIT_S": "at start, seconds to wait for the bot to answer (default 30)",
    "ANTHROPIC_API_KEY": "the Claude student (absent: the offline student)",
    "WANDB_API_KEY": "W&B logging of runs (absent: offline runs)",
    "KOHAI_WANDB": "disabled: no W&B logging",
}
TRAIN_ENV = (
    "environment: none read; the script runs with KOHAI_SEED, KOHAI_BUDGET_S,\n"
    "KOHAI_RUN_DIR and KOHAI_METRICS_FILE set (the metrics protocol, docs/trainer.md)\n"
    "and the environment's secrets removed"
)
REPORT_ENV = {**DB_ENV, "KOHAI_PROBLEM": "a repo directory or kohai.toml to read the metric from"}


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs as written (the environment table keeps its columns)."""


def _env_epilog(env: dict[str, str]) -> str:
    width = max(len(name) for name in env)
    lines = [f"  {name:<{width}}  {meaning}" for name, meaning in env.items()]
    return "environment:\n" + "\n".join(lines)


def _command(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    name: str,
    help: str,
    env: dict[str, str] | str | None = None,
    description: str | None = None,
) -> argparse.ArgumentParser:
    """A subcommand whose --help has its one-line description and the variables it reads
    (`env`: name -> meaning, or the whole paragraph when it needs words)."""
    if isinstance(env, str):
        epilog = env
    else:
        epilog = _env_epilog(env) if env else "environment: none"
    return sub.add_parser(
        name,
        help=help,
        description=description or help[0].upper() + help[1:] + ".",
        epilog=epilog,
        formatter_class=_Formatter,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kohai",
        description="kohai: an autonomous ML research lab, run through GitHub pull requests.",
        epilog="`kohai COMMAND -h` describes a command and the environment variables it reads.",
        formatter_class=_Formatter,
    )
    parser.add_argument("--version", action="version", version=f"kohai {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of an error instead of its one-line message",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = _command(
        sub,
        "demo",
        "run a short research session end to end on this machine",
        {"ANTHROPIC_API_KEY": "Claude agents (absent: offline)", "KOHAI_LOG": "the log level"},
    )
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

    serve = _command(
        sub,
        "serve",
        "the bot server: webhooks, host API, dashboard, workers",
        SERVE_ENV,
        "The bot server: GitHub webhooks, the host API, the dashboard and the workers.\n"
        "It checks the App's credentials with GitHub first and exits when GitHub rejects\n"
        "them or cannot be reached, unless --wait-for-github.",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)"
    )
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    serve.add_argument(
        "--wait-for-github",
        action="store_true",
        help="serve even when GitHub rejects the credentials or is unreachable; "
        "/healthz answers 503 until the check passes",
    )

    setup = _command(
        sub,
        "setup",
        "register the GitHub App (GitHub's manifest flow) and write its credentials",
        {
            "KOHAI_PUBLIC_URL": "the bot's public URL (--url)",
            "KOHAI_WEBHOOK_PROXY_URL": "a smee-compatible webhook channel (--webhook-proxy-url)",
            "KOHAI_GITHUB_API_URL": "GitHub's API (--github-api-url)",
        },
        "Register kohai's GitHub App through GitHub's manifest flow: a local page\n"
        "posts the manifest, GitHub sends the browser back to kohai, and every credential\n"
        "goes to one file (mode 0600) that `kohai serve` reads.",
    )
    setup.add_argument("--org", default=None, help="register it for this organisation")
    setup.add_argument(
        "--out", default=None, help="the credentials file (default ~/.config/kohai/app.toml)"
    )
    setup.add_argument("--force", action="store_true", help="replace an existing --out file")
    setup.add_argument("--name", default="kohai", help="the App's name on GitHub")
    setup.add_argument(
        "--url", default=None, help="the bot's public URL (default $KOHAI_PUBLIC_URL)"
    )
    setup.add_argument(
        "--webhook-proxy-url",
        default=None,
        help="a smee-compatible channel for the webhooks (default $KOHAI_WEBHOOK_PROXY_URL)",
    )
    setup.add_argument(
        "--github-url", default=None, help="GitHub's web address (default https://github.com)"
    )
    setup.add_argument(
        "--github-api-url",
        default=None,
        help="GitHub's API (default $KOHAI_GITHUB_API_URL, or derived from --github-url)",
    )
    setup.add_argument("--port", type=int, default=0, help="the local page's port (default: free)")
    setup.add_argument(
        "--no-browser", action="store_true", help="print the page's address, open no browser"
    )

    sandbox = _command(
        sub, "sandbox", "the local GitHub sandbox, with one repo and the App installed"
    )
    sandbox.add_argument("--port", type=int, default=9000, help="port (default 9000)")
    sandbox.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    sandbox.add_argument(
        "--data", default="sandbox-data", help="state directory (survives restarts)"
    )
    sandbox.add_argument(
        "--webhook-url",
        default="http://127.0.0.1:8000/webhooks/github",
        help="where the sandbox delivers webhooks (the bot's /webhooks/github)",
    )
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

    hosts = _command(sub, "hosts", "registered students and their hosts (in the bot's database)")
    hosts_sub = hosts.add_subparsers(dest="hosts_command", required=True, metavar="ACTION")
    hosts_env = {**DB_ENV, "KOHAI_PUBLIC_URL": "the bot URL the host is told to use"}
    add = _command(
        hosts_sub,
        "add",
        "register a student; prints its token once (refuses an existing name)",
        hosts_env,
    )
    add.add_argument("name", help="the student's name: lowercase letters, digits and '-'")
    add.add_argument("--gpus", default="", help=GPUS_HELP + " (default none)")
    add.add_argument(
        "--labs",
        default=None,
        metavar="OWNER/REPO[:TRACK],...",
        help="the labs this student may serve (default: all)",
    )
    add.add_argument(
        "--create", action="store_true", help="create the database if KOHAI_DB names no file yet"
    )
    rotate = _command(
        hosts_sub, "rotate", "a new token for a student; the old one stops working", hosts_env
    )
    rotate.add_argument("name", help="a registered student")
    _command(hosts_sub, "list", "registered students", DB_ENV)

    host = _command(sub, "host", "the GPU host side")
    host_sub = host.add_subparsers(dest="host_command", required=True, metavar="ACTION")
    run = _command(
        host_sub,
        "run",
        "the host daemon: lease jobs, implement, train, report",
        HOST_ENV,
        "The host daemon: lease jobs from the bot, implement, train, report.\n"
        "At start it checks --bot-url (scheme, reachable, token accepted).",
    )
    run.add_argument(
        "--name", help="student name (one student); its token from --token-file or KOHAI_HOST_TOKEN"
    )
    run.add_argument(
        "--token-file",
        default=None,
        metavar="PATH",
        help="read the student's host token from PATH (mode 0600; `-`: standard input)",
    )
    # Refused with one line naming --token-file: a token is never taken on the command line.
    run.add_argument("--token", help=argparse.SUPPRESS)
    run.add_argument("--gpus", default="", help=GPUS_HELP + " (for --name)")
    run.add_argument(
        "--student",
        action="append",
        default=[],
        metavar="NAME:GPUS:TOKEN_FILE",
        help="several students on one host, e.g. fern:0,1:fern.token, each token in a 0600 file "
        "(repeatable; GPUS as --gpus)",
    )
    run.add_argument(
        "--bot-url", required=True, help="the bot's URL, e.g. https://kohai.example.com"
    )
    run.add_argument("--work-dir", default=None, help="repo cache and worktrees (KOHAI_HOST_DIR)")
    run.add_argument(
        "--unsandboxed",
        action="store_true",
        help="run jobs without the bubblewrap sandbox where it cannot start; "
        'every result then says "unsandboxed"',
    )
    run.add_argument(
        "--keep-runs",
        action="store_true",
        help="keep each job's run directories (logs, artefacts) after the bot acknowledged "
        "its result; by default they are deleted then",
    )

    train = _command(
        sub, "train", "one training run of a problem repo under the harness, locally", TRAIN_ENV
    )
    train.add_argument("path", nargs="?", default=".", help="the problem repo (default .)")
    train.add_argument("--seed", type=int, default=0, help="the run's seed (default 0)")
    train.add_argument("--budget", default=None, help="override the budget, e.g. 30s")
    train.add_argument(
        "--unsandboxed",
        action="store_true",
        help="train without the bubblewrap job sandbox; the result says so",
    )

    init = _command(
        sub,
        "init",
        "adopt a repository (kohai.toml, program.md) or scaffold the reference problem",
        None,
        "Adopt an existing repository: find its training script (or --train), write\n"
        "kohai.toml and program.md where they are absent (never overwriting), and say\n"
        "what to fill in. With --example charlm, scaffold the reference problem in an\n"
        "empty or new directory.",
    )
    init.add_argument("path", nargs="?", default=".", help="the repository (default .)")
    init.add_argument("--train", default=None, metavar="FILE", help="the training script")
    init.add_argument(
        "--example",
        choices=("charlm",),
        default=None,
        help="scaffold the reference problem instead (charlm: a character LM)",
    )

    check = _command(
        sub,
        "check",
        "validate kohai.toml and smoke-run the problem, a verdict per step",
        TRAIN_ENV,
    )
    check.add_argument("path", nargs="?", default=".", help="the problem repository (default .)")
    check.add_argument("--no-run", action="store_true", help="the schema and files only")
    check.add_argument("--budget", default=None, help="smoke-run budget (default 10s)")
    check.add_argument("--seed", type=int, default=0, help="smoke-run seed (default 0)")
    _command(sub, "schema", "print kohai.toml's JSON Schema, for editors")

    status = _command(sub, "status", "experiments, students, queue", REPORT_ENV)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument(
        "--repo",
        metavar="OWNER/NAME[:TRACK]",
        help="the lab, or one track of it (default: the only lab)",
    )

    history = _command(sub, "history", "every run ever", REPORT_ENV)
    history.add_argument("--best", action="store_true", help="only runs that improved the best")
    history.add_argument(
        "--repo",
        metavar="OWNER/NAME[:TRACK]",
        help="the lab, or one track of it (default: the only lab)",
    )
    history.add_argument("--export", metavar="FILE", help="write .tsv, .csv or .json")

    report = _command(
        sub,
        "report",
        "report.md and each lab's charts (best over experiments and over time)",
        {**REPORT_ENV, "KOHAI_GITHUB_HTML_URL": "GitHub's web host for links"},
    )
    report.add_argument("--out", default="report", help="the directory to write (default report)")
    report.add_argument(
        "--repo",
        metavar="OWNER/NAME[:TRACK]",
        help="one lab, or one track of it (default: a section per lab)",
    )
    report.add_argument("--title", default="kohai lab report", help="the report's title")

    deploy = _command(sub, "deploy", "render deployment manifests")
    deploy_sub = deploy.add_subparsers(dest="deploy_command", required=True, metavar="TARGET")
    k8s = _command(
        deploy_sub,
        "k8s",
        "Kubernetes manifests for the bot and the fleet",
        {"KUBECONFIG": "the cluster kubectl applies to (without --dry-run)"},
    )
    k8s.add_argument("--students", type=int, default=2, help="students (default 2)")
    k8s.add_argument("--gpus-per-student", type=int, default=1, help="GPUs each (default 1)")
    k8s.add_argument("--image", default="ghcr.io/kohai/kohai", help="the container image")
    k8s.add_argument("--namespace", default="kohai", help="the namespace (default kohai)")
    k8s.add_argument("--dry-run", action="store_true", help="print instead of applying")

    app = _command(sub, "app", "the GitHub App")
    app_sub = app.add_subparsers(dest="app_command", required=True, metavar="ACTION")
    manifest = _command(app_sub, "manifest", "print the GitHub App manifest")
    manifest.add_argument("--url", default="https://kohai.example.com", help="the bot's public URL")
    manifest.add_argument("--name", default="kohai", help="the App's name (default kohai)")
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
    key = _handler_key(args)
    module_name, func_name = HANDLERS[key].split(":")
    try:
        handler = getattr(importlib.import_module(module_name), func_name)
        return int(handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except CliError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"kohai {key}: {exc}", file=sys.stderr)
        return exc.code
    except Exception as exc:  # noqa: BLE001 - a user sees one line; --debug shows the rest
        if args.debug:
            raise
        print(
            f"kohai {key}: {type(exc).__name__}: {exc} (`kohai --debug {key} ...` shows the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
