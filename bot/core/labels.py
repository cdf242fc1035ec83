"""Labels as a projection of the bot's state: what a PR's labels should be."""

from __future__ import annotations

STATUS_LABELS: dict[str, str] = {
    "queued": "status:queued",
    "implementing": "status:wip",
    "training": "status:wip",
    "review": "status:review",
}

LABEL_SPECS: list[dict[str, str]] = [
    {"name": "status:queued", "color": "c5def5", "description": "kohai: waiting for a host"},
    {"name": "status:wip", "color": "fbca04", "description": "kohai: a host is working on it"},
    {"name": "status:review", "color": "0e8a16", "description": "kohai: results posted"},
    {"name": "hold", "color": "b60205", "description": "kohai: start nothing new for it"},
    {"name": "student:any", "color": "d4c5f9", "description": "kohai: whichever student is free"},
]


def track_label(track: str) -> str:
    """`track:<name>`: on an issue it picks the research track; on a PR it shows it."""
    return f"track:{track}"


def track_label_spec(track: str) -> dict[str, str]:
    return {
        "name": track_label(track),
        "color": "bfdadc",
        "description": f"kohai research track {track}",
    }


def student_label(student: str | None) -> str:
    return f"student:{student or 'any'}"


def student_label_spec(student: str) -> dict[str, str]:
    return {
        "name": student_label(student),
        "color": "d4c5f9",
        "description": f"kohai student {student}",
    }


def status_label(state: str) -> str | None:
    return STATUS_LABELS.get(state)


def desired_labels(state: str, student: str | None, hold: bool) -> set[str]:
    """The kohai-owned labels an experiment PR should carry in `state`."""
    labels = {student_label(student)}
    status = status_label(state)
    if status:
        labels.add(status)
    if hold:
        labels.add("hold")
    return labels


def is_kohai_label(name: str) -> bool:
    return name.startswith(("status:", "student:", "track:")) or name == "hold"
