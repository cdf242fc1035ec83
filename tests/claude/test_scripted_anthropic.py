"""The scripted Messages API itself: what raw HTTP clients see from it."""

from __future__ import annotations

import json

import httpx
from support.scripted_anthropic import ScriptedAnthropic, text, tool_use, uses_tools


def sse_events(body: str) -> list[tuple[str, dict]]:
    events = []
    for chunk in body.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in chunk.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


def test_streams_the_messages_event_sequence() -> None:
    reply = tool_use("Read", {"file_path": "train.py"}, say="Reading it.", output_tokens=42)
    with ScriptedAnthropic([reply]) as api:
        response = httpx.post(
            f"{api.url}/v1/messages?beta=true",
            json={"model": "m", "stream": True, "messages": [], "tools": [{"name": "Read"}]},
        )
    assert response.headers["content-type"] == "text/event-stream"
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 2
    text_deltas = [
        d["delta"]["text"] for n, d in events if d.get("delta", {}).get("type") == "text_delta"
    ]
    assert "".join(text_deltas) == "Reading it."
    partial = [
        d["delta"]["partial_json"]
        for n, d in events
        if n == "content_block_delta" and d["index"] == 1
    ]
    assert json.loads("".join(partial)) == {"file_path": "train.py"}
    delta = events[-2][1]
    assert delta["delta"]["stop_reason"] == "tool_use" and delta["usage"]["output_tokens"] == 42


def test_filters_pass_side_calls_to_the_default_and_record_everything() -> None:
    with ScriptedAnthropic([text("for the agent", when=uses_tools)], default=text("side")) as api:
        side = httpx.post(f"{api.url}/v1/messages", json={"model": "m", "messages": []})
        main = httpx.post(
            f"{api.url}/v1/messages", json={"model": "m", "messages": [], "tools": [{"name": "X"}]}
        )
        assert httpx.head(api.url).status_code == 200
        assert httpx.get(f"{api.url}/v1/models").status_code == 404
        counted = httpx.post(f"{api.url}/v1/messages/count_tokens", json={"messages": []})
    assert side.json()["content"][0]["text"] == "side"
    assert main.json()["content"][0]["text"] == "for the agent"
    assert main.json()["stop_reason"] == "end_turn"
    assert counted.json()["input_tokens"] >= 1
    assert [r.body.get("tools") is not None for r in api.requests] == [False, True]
    assert ("HEAD", "/") in api.log and ("GET", "/v1/models") in api.log
    assert api.remaining == []
