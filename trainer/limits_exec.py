"""Join a job's cgroups, set its rlimits, exec its command: the prefix `trainer.limits` puts first.

    python -I -S limits_exec.py [--join CGROUP_PROCS]... [--rlimit NAME=VALUE]... -- COMMAND...

It runs before every bounded process (training, `[data]`, `[eval]`), so it
imports only `os`, `resource` and `sys`: its start-up is the whole of its cost.
Everything the command starts (the sandbox and all in it) inherits the
cgroup and the limits. RLIMIT_CPU gets a hard limit 5 s above the soft one:
SIGXCPU first, SIGKILL after.
"""

import os
import resource
import sys

RLIMITS = {
    "AS": resource.RLIMIT_AS,
    "NPROC": resource.RLIMIT_NPROC,
    "FSIZE": resource.RLIMIT_FSIZE,
    "CPU": resource.RLIMIT_CPU,
}


def main(argv: list[str]) -> int:
    joins: list[str] = []
    rlimits: list[tuple[int, int]] = []
    while len(argv) >= 2 and argv[0] != "--":
        flag, value, argv = argv[0], argv[1], argv[2:]
        if flag == "--join":
            joins.append(value)
        elif flag == "--rlimit" and value.partition("=")[0] in RLIMITS:
            key, _, number = value.partition("=")
            rlimits.append((RLIMITS[key], int(number)))
        else:
            print(f"kohai limits: unknown flag {flag} {value}", file=sys.stderr)
            return 2
    command = argv[1:] if argv[:1] == ["--"] else []
    if not command:
        print("usage: limits_exec.py [--join F] [--rlimit N=V] -- COMMAND...", file=sys.stderr)
        return 2
    for path in joins:
        with open(path, "w") as fh:
            fh.write(str(os.getpid()))
    for which, wanted in rlimits:
        _soft, hard = resource.getrlimit(which)
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        cpu = which == resource.RLIMIT_CPU and hard == resource.RLIM_INFINITY
        resource.setrlimit(which, (soft, soft + 5 if cpu else soft))
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"kohai limits: cannot run {command[0]}: {exc.strerror}", file=sys.stderr)
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
