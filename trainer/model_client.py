"""The evaluator's half of the model launcher (`trainer.model_launch`): hand this process's
standard input, output and error and the command to the harness, wait, exit with its status.

    python -I -S model_client.py SOCKET -- COMMAND...

It runs once per model child, inside the evaluator's sandbox, so it imports
only what it uses: its start-up is part of every evaluation's time.
"""

import json
import os
import socket
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: model_client.py SOCKET -- COMMAND...", file=sys.stderr)
        return 2
    path, command = argv[0], argv[2:]
    request = json.dumps({"argv": command, "env": dict(os.environ)}).encode()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        conn.connect(path)
        socket.send_fds(conn, [request], [0, 1, 2])
        answer = conn.recv(4096)
    except OSError as exc:
        print(f"kohai: cannot reach the harness's model launcher: {exc}", file=sys.stderr)
        return 125
    try:
        return int(json.loads(answer)["exit"])
    except (ValueError, KeyError, TypeError):
        return 125


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
