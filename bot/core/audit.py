"""The hypothesis-vs-diff audit: does the diff touch what can move the metric besides the idea?

A result may merge only if the change that produced it is the hypothesis and
nothing else that can move the metric. The offline form is this static check
of the pull request's diff: every added or removed line (comments stripped) is
scanned for names of the four things that can shift a score without being an
idea about the model:

- **seed**: `KOHAI_SEED`, `manual_seed`, any identifier with a `seed` part;
- **data order**: the batch generator and sampling (`Generator`, `get_batch`,
  `load_train`, `shuffle`, `randperm`, `permutation`, `sampler`);
- **budget**: `KOHAI_BUDGET_S`, the clock (`time`, `perf_counter`,
  `monotonic`), the SIGTERM handler (`signal`, `SIGTERM`);
- **evaluation**: `KOHAI_EVAL`, `KOHAI_EVAL_FILE`, `prepare`, `evaluate`,
  `KOHAI_DATA_DIR`, `KOHAI_RUN_DIR`, `KOHAI_ARTIFACT_DIR`, `save_artifact`; and
  the progress stream early stopping reads (`KOHAI_METRICS_FILE`,
  `append_metrics`).

A name is allowed when the hypothesis names it (the exact identifier, or for
seeds the word "seed"): an experiment about data order may change the
generator. Words that every hypothesis uses ("budget", "time") do not excuse
anything; the identifier must be named. A change to a file outside the
editable list, and a diff too large to have been read whole, are findings too.

Pure: text in, findings out. The diff is the one the bot computed itself when
it accepted the experiment's current head from a host (`bot.engine.evidence.
verified_diff` reads it; a host's own account of its diff is never read);
`failed_audit` is what the reviewer (`bot.engine.review.Reviewer.conclude`)
calls before a merge.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from bot.problem import path_matches
from bot.protocol import DIFF_INCOMPLETE

TRUNCATED_MARK = DIFF_INCOMPLETE
MAX_FINDINGS = 20

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_STRING = re.compile(r"(\"\"\"|'''|\"(?:\\.|[^\"\\])*\"|'(?:\\.|[^'\\])*')")


@dataclass(frozen=True)
class Sensitive:
    """A name that can move the metric, its category, and what in a hypothesis excuses it."""

    name: str
    category: str
    excused_by: str  # a regex searched in the hypothesis, case-insensitive

    def matches(self, token: str) -> bool:
        if self.name == "seed":
            return "seed" in token.lower().split("_")
        return token == self.name


SENSITIVE: tuple[Sensitive, ...] = (
    Sensitive("seed", "seed", r"\bseeds?\b|seed"),
    Sensitive("KOHAI_SEED", "seed", r"KOHAI_SEED|\bseeds?\b"),
    Sensitive("Generator", "data order", r"\bgenerator\b"),
    Sensitive("get_batch", "data order", r"\bget_batch\b"),
    Sensitive("load_train", "data order", r"\bload_train\b"),
    Sensitive("shuffle", "data order", r"\bshuffl"),
    Sensitive("randperm", "data order", r"\brandperm\b"),
    Sensitive("permutation", "data order", r"\bpermutation\b"),
    Sensitive("sampler", "data order", r"\bsampler\b"),
    Sensitive("KOHAI_BUDGET_S", "budget", r"\bKOHAI_BUDGET_S\b"),
    Sensitive("time", "budget", r"\btime\.(time|monotonic|perf_counter)\b"),
    Sensitive("perf_counter", "budget", r"\bperf_counter\b"),
    Sensitive("monotonic", "budget", r"\bmonotonic\b"),
    Sensitive("signal", "budget", r"\bsignal\b|\bSIGTERM\b"),
    Sensitive("SIGTERM", "budget", r"\bSIGTERM\b"),
    Sensitive("KOHAI_EVAL", "evaluation", r"\bKOHAI_EVAL\b"),
    Sensitive("KOHAI_EVAL_FILE", "evaluation", r"\bKOHAI_EVAL_FILE\b"),
    Sensitive("prepare", "evaluation", r"\bprepare(\.py)?\b"),
    Sensitive("evaluate", "evaluation", r"\bevaluate\b"),
    Sensitive("KOHAI_DATA_DIR", "evaluation", r"\bKOHAI_DATA_DIR\b"),
    Sensitive("KOHAI_RUN_DIR", "evaluation", r"\bKOHAI_RUN_DIR\b"),
    Sensitive("KOHAI_ARTIFACT_DIR", "evaluation", r"\bKOHAI_ARTIFACT_DIR\b"),
    Sensitive("save_artifact", "evaluation", r"\bsave_artifact\b"),
    Sensitive("KOHAI_METRICS_FILE", "progress", r"\bKOHAI_METRICS_FILE\b"),
    Sensitive("append_metrics", "progress", r"\bappend_metrics\b"),
)


@dataclass(frozen=True)
class Finding:
    """One changed line that touches a sensitive name the hypothesis does not name."""

    category: str  # seed | data order | budget | evaluation | progress | files | size
    name: str
    path: str
    line: str  # the diff line, "+..." or "-...", clipped

    def text(self) -> str:
        where = f"`{self.path}`" if self.path else "the diff"
        if self.category == "files":
            return f"{where} is not an editable file"
        if self.category == "size":
            return "the diff is too large to audit whole, or could not be made"
        return f"{self.category}: `{self.name}` changes in {where}: `{self.line}`"


@dataclass(frozen=True)
class Audit:
    """The audit's answer: passed, or the findings that send the PR back."""

    findings: tuple[Finding, ...]

    @property
    def passed(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        """Markdown for the PR: what was found and what to do about it."""
        if self.passed:
            return "Hypothesis-vs-diff audit: passed."
        shown = self.findings[:MAX_FINDINGS]
        lines = [
            "Hypothesis-vs-diff audit: the diff changes what can move the metric without "
            "being the hypothesis. Revert these changes, or name them in the hypothesis if "
            "they are the idea:",
            *(f"- {f.text()}" for f in shown),
        ]
        if len(self.findings) > len(shown):
            lines.append(f"- ... and {len(self.findings) - len(shown)} more")
        return "\n".join(lines)


def audit_diff(diff: str, hypothesis: str, *, editable: Sequence[str] | None = None) -> Audit:
    """Findings for a unified diff (`git diff` / GitHub's format) against a hypothesis text."""
    findings: list[Finding] = []
    path = ""
    excused = {s.name for s in SENSITIVE if re.search(s.excused_by, hypothesis, re.I)}
    seen: set[tuple[str, str]] = set()
    for raw in diff.splitlines():
        if raw.startswith("diff --git "):
            path = _path_of(raw)
            if editable is not None and path and not path_matches(path, tuple(editable)):
                findings.append(Finding("files", "", path, ""))
            continue
        if raw.startswith(("+++", "---", "@@", "index ")):
            continue
        if raw.strip() == TRUNCATED_MARK:
            findings.append(Finding("size", "", "", ""))
            continue
        if not raw.startswith(("+", "-")):
            continue
        for token in _tokens(raw[1:]):
            for sensitive in SENSITIVE:
                if sensitive.name in excused or not sensitive.matches(token):
                    continue
                key = (path, sensitive.category + ":" + token)
                if key in seen:
                    continue
                seen.add(key)
                findings.append(Finding(sensitive.category, token, path, _clip(raw)))
    return Audit(tuple(findings))


def failed_audit(
    diff: str | None,
    hypothesis: str,
    editable: Sequence[str] | None,
    gate_verdict: str,
    opinion: str | None,
) -> Audit | None:
    """The failed audit that stops a merge about to happen, else None.

    Only a result the gate and the opinion would merge is audited: the audit can
    stop a merge, never cause one. With no diff the bot computed (`diff` None: a
    head no host pushed) it passes; the merge still checks the PR's files.
    """
    if gate_verdict != "merge" or opinion in ("close", "changes") or diff is None:
        return None
    audit = audit_diff(diff, hypothesis, editable=editable)
    return audit if not audit.passed else None


def _path_of(header: str) -> str:
    """`b/...` path of a `diff --git a/x b/x` header (quoted names kept as git writes them)."""
    parts = header.split(" b/", 1)
    return parts[1].strip() if len(parts) == 2 else ""


def _tokens(line: str) -> list[str]:
    """Identifiers of a line's code, and `KOHAI_*` names inside its string literals.

    A comment changes nothing; words inside strings ("training time") are not
    code, but an environment variable is named in a string (`os.environ["KOHAI_SEED"]`).
    """
    tokens: list[str] = []
    position = 0
    for match in _STRING.finditer(line):
        code = line[position : match.start()]
        if "#" in code:
            tokens += _IDENT.findall(code.split("#", 1)[0])
            return tokens
        tokens += _IDENT.findall(code)
        tokens += [t for t in _IDENT.findall(match.group(0)) if t.startswith("KOHAI_")]
        position = match.end()
    tokens += _IDENT.findall(line[position:].split("#", 1)[0])
    return tokens


def _clip(line: str, limit: int = 120) -> str:
    flat = " ".join(line.split()).replace("`", "'")
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
