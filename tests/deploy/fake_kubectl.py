"""A stand-in for kubectl in the deployment tests: records calls, keeps applied objects.

State lives in $FAKE_KUBECTL_DIR: `calls.jsonl` (argv and stdin of every
call) and `applied.json` (every object applied, in order). Secrets named in
$FAKE_KUBECTL_SECRETS exist from the start. `exec ... -- python ...` runs the
command here, with this interpreter and KOHAI_DB=$FAKE_KUBECTL_DB, as the
bot's pod would run it against the bot's store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml


def main(argv: list[str]) -> int:
    state = Path(os.environ["FAKE_KUBECTL_DIR"])
    stdin = "" if sys.stdin.isatty() else sys.stdin.read()
    with (state / "calls.jsonl").open("a") as calls:
        calls.write(json.dumps({"argv": argv, "stdin": stdin}) + "\n")
    applied_file = state / "applied.json"
    applied = json.loads(applied_file.read_text()) if applied_file.exists() else []
    if argv[:1] != ["--namespace"]:
        print("fake kubectl: expected --namespace first", file=sys.stderr)
        return 2
    args = argv[2:]
    if args[:3] == ["apply", "-f", "-"]:
        docs = [d for d in yaml.safe_load_all(stdin) if d]
        if not docs:
            print("error: no objects passed to apply", file=sys.stderr)
            return 1
        applied += docs
        applied_file.write_text(json.dumps(applied))
        for doc in docs:
            print(f"{doc['kind'].lower()}/{doc['metadata']['name']} configured")
        return 0
    if args[:2] == ["get", "secret"]:
        name = args[2]
        preset = [s for s in os.environ.get("FAKE_KUBECTL_SECRETS", "").split(",") if s]
        made = [d["metadata"]["name"] for d in applied if d["kind"] == "Secret"]
        if name in preset + made:
            print(f"secret/{name}")
            return 0
        print(f'Error from server (NotFound): secrets "{name}" not found', file=sys.stderr)
        return 1
    if args[:2] == ["rollout", "status"]:
        print(f"{args[2]} successfully rolled out")
        return 0
    if args[:1] == ["exec"] and "--" in args:
        command = args[args.index("--") + 1 :]
        if command[0] == "python":
            command[0] = sys.executable
        env = {**os.environ, "KOHAI_DB": os.environ["FAKE_KUBECTL_DB"]}
        done = subprocess.run(command, input=stdin, text=True, env=env, capture_output=True)
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        return done.returncode
    print(f"fake kubectl: unknown command {args}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
