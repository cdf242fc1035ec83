"""A scripted Anthropic Messages API on 127.0.0.1, for driving real clients in tests.

The anthropic SDK and the Claude Code CLI talk to it unchanged through their
base URL. Each `POST /v1/messages` takes the next scripted reply whose `when`
predicate accepts the request (a request no reply accepts gets `default`), and
answers it as server-sent events when the body says `"stream": true`, as one
JSON message otherwise. Every request is recorded, so a test can assert what
the client actually sent: the prompts, the tools, cache_control, the model.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RequestFilter = Callable[[dict[str, Any]], bool]


@dataclass
class Reply:
    """One scripted assistant message, or an HTTP error when `status` is not 200."""

    content: list[dict[str, Any]] = field(default_factory=list)
    input_tokens: int = 100
    output_tokens: int = 20
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    stop_reason: str | None = None  # derived from the content when None
    status: int = 200
    error_type: str = ""
    when: RequestFilter | None = None
    delay_s: float = 0.0  # wait this long before answering (a stalled API)

    def accepts(self, body: dict[str, Any]) -> bool:
        return self.when is None or self.when(body)

    def usage(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
        }

    def final_stop_reason(self) -> str:
        if self.stop_reason:
            return self.stop_reason
        return "tool_use" if any(b["type"] == "tool_use" for b in self.content) else "end_turn"


_ids = itertools.count(1)


def text(answer: str, **options: Any) -> Reply:
    """An assistant message that only says `answer`."""
    return Reply(content=[{"type": "text", "text": answer}], **options)


def tool_use(name: str, arguments: dict[str, Any], *, say: str = "", **options: Any) -> Reply:
    """An assistant message that calls tool `name` with `arguments` (after saying `say`)."""
    blocks: list[dict[str, Any]] = [{"type": "text", "text": say}] if say else []
    blocks.append(
        {"type": "tool_use", "id": f"toolu_{next(_ids):06d}", "name": name, "input": arguments}
    )
    return Reply(content=blocks, **options)


def error(status: int, error_type: str, message: str = "scripted error") -> Reply:
    """An API error response, e.g. `error(529, "overloaded_error")`."""
    return Reply(content=[{"type": "text", "text": message}], status=status, error_type=error_type)


def uses_tools(body: dict[str, Any]) -> bool:
    """True for requests that offer tools: an agent's working turns, not side calls."""
    return bool(body.get("tools"))


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class ScriptedAnthropic:
    """`with ScriptedAnthropic([replies]) as api:` serve them at `api.url`; see `api.requests`."""

    def __init__(self, script: Iterable[Reply] = (), *, default: Reply | None = None) -> None:
        self._script: list[Reply] = list(script)
        self.default = default or text("Done.")
        self.requests: list[RecordedRequest] = []  # every POST /v1/messages, in order
        self.log: list[tuple[str, str]] = []  # every request: (method, path)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> ScriptedAnthropic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def remaining(self) -> list[Reply]:
        """Scripted replies no request has taken yet."""
        with self._lock:
            return list(self._script)

    def _next_reply(self, body: dict[str, Any]) -> Reply:
        with self._lock:
            for index, reply in enumerate(self._script):
                if reply.accepts(body):
                    return self._script.pop(index)
            return self.default


def _message(reply: Reply, model: str) -> dict[str, Any]:
    return {
        "id": f"msg_{next(_ids):06d}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": reply.content,
        "stop_reason": reply.final_stop_reason(),
        "stop_sequence": None,
        "usage": reply.usage(),
    }


def _events(reply: Reply, model: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The Messages API's streaming events for `reply`, in the order the API sends them."""
    start = _message(reply, model)
    start.update(content=[], stop_reason=None)
    start["usage"] = {**reply.usage(), "output_tokens": 1}
    yield "message_start", {"type": "message_start", "message": start}
    yield "ping", {"type": "ping"}
    for index, block in enumerate(reply.content):
        if block["type"] == "text":
            opening: dict[str, Any] = {"type": "text", "text": ""}
            words = block["text"].split(" ")
            deltas = [
                {"type": "text_delta", "text": w + (" " if i < len(words) - 1 else "")}
                for i, w in enumerate(words)
            ]
        else:
            opening = {**block, "input": {}}
            encoded = json.dumps(block["input"])
            half = len(encoded) // 2
            deltas = [
                {"type": "input_json_delta", "partial_json": part}
                for part in (encoded[:half], encoded[half:])
            ]
        yield (
            "content_block_start",
            {
                "type": "content_block_start",
                "index": index,
                "content_block": opening,
            },
        )
        for delta in deltas:
            yield (
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": reply.final_stop_reason(), "stop_sequence": None},
            "usage": {"output_tokens": reply.output_tokens},
        },
    )
    yield "message_stop", {"type": "message_stop"}


def _handler_for(api: ScriptedAnthropic) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_HEAD(self) -> None:
            api.log.append(("HEAD", self.path))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            api.log.append(("GET", self.path))
            self._json(
                404,
                {"type": "error", "error": {"type": "not_found_error", "message": "not scripted"}},
            )

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            path = self.path.split("?", 1)[0]
            api.log.append(("POST", self.path))
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = {}
            if path == "/v1/messages/count_tokens":
                self._json(200, {"input_tokens": max(1, len(raw) // 4)})
                return
            if path != "/v1/messages":
                self._json(
                    404, {"type": "error", "error": {"type": "not_found_error", "message": path}}
                )
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            api.requests.append(RecordedRequest("POST", self.path, headers, body))
            reply = api._next_reply(body)
            if reply.delay_s:
                time.sleep(reply.delay_s)
            model = str(body.get("model", "claude-test"))
            if reply.status != 200:
                message = reply.content[0]["text"] if reply.content else "error"
                self._json(
                    reply.status,
                    {"type": "error", "error": {"type": reply.error_type, "message": message}},
                )
            elif body.get("stream"):
                self._stream(reply, model)
            else:
                self._json(200, _message(reply, model))

        def _json(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("request-id", f"req_{next(_ids):06d}")
            if status >= 500 or status == 429:
                self.send_header("x-should-retry", "true")
                self.send_header("retry-after-ms", "20")  # keeps client retries quick
            self.end_headers()
            self.wfile.write(data)

        def _stream(self, reply: Reply, model: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("request-id", f"req_{next(_ids):06d}")
            self.end_headers()
            for name, data in _events(reply, model):
                chunk = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
                self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()

    return Handler
