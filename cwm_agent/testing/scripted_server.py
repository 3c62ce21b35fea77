"""A scripted stand-in for vLLM's OpenAI-compatible server, on loopback.

It is the one stand-in the tests allow: CWM itself. Everything on the wire is real:
a ThreadingHTTPServer on 127.0.0.1 answers POST /v1/completions and
/v1/chat/completions (streamed as server-sent events, or not), GET /v1/models,
POST /tokenize, GET /health, with vLLM's JSON shapes and error bodies. Replies
come from a script, one entry per generation request, in order:

- ``"text"``: a reply that ends with finish_reason "stop" on the model's <|eot_id|>;
- ``Reply(text, finish_reason="length", delay=0.01)``: a cut-off reply, or a slow one
  (``delay`` is slept before each streamed chunk); ``Reply(text, stop_token="<|eom_id|>")``
  one that stopped on another token (a text that ends with a stop token stopped on it);
- ``Failure(status, message)``: an HTTP error with vLLM's error body;
- ``StreamFailure(after_text, message)``: a 200 stream that sends ``after_text``, then
  ``data: {"error": {...}}`` and ``data: [DONE]`` (how vLLM reports an error mid-stream);
- a callable ``(request_json) -> entry``, for replies that depend on the request.

Prompt tokens are counted with a small deterministic tokenizer (the same one
/tokenize uses), so a request whose prompt plus max_tokens exceeds
``max_model_len`` gets vLLM's real 400 "maximum context length" answer without
using up a script entry. Stop tokens behave as vLLM's: a reply that stopped on one counts it
in ``completion_tokens``, leaves its text out unless the request asked for
``include_stop_str_in_output``, and reports ``stop_reason`` (the token id, or None for the
model's end-of-sequence token, <|eot_id|>). Run it by hand:
``python -m cwm_agent.testing.scripted_server --script replies.json --port 8000``.
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

from cwm_agent.protocol import CONTEXT_WINDOW, Action, render_action
from cwm_agent.testing.loopback import Loopback


def think(reasoning: str, tool: str, body: str) -> str:
    """A scripted CWM turn: reasoning, "</think>", one tool call (the stop token comes from Reply)."""
    return f"{reasoning}\n</think>\n{render_action(Action(tool, body))}"


@dataclass(frozen=True)
class Reply:
    """A generated reply. ``delay`` seconds are slept before each streamed chunk
    (a non-streamed answer waits as long as the whole stream would)."""

    text: str
    finish_reason: str = "stop"
    delay: float = 0.0
    stop_token: str = "<|eot_id|>"  # the token a "stop" reply ended on


@dataclass(frozen=True)
class _Generated:
    """A reply as the server sends it: the text on the wire and vLLM's accounting of it."""

    text: str
    finish_reason: str
    stop_reason: int | None
    completion_tokens: int
    delay: float


_EOS = "<|eot_id|>"  # the model's end-of-sequence token: vLLM reports stop_reason None for it


def _generated(reply: Reply, *, include_stop: bool) -> _Generated:
    text, stop = reply.text, reply.stop_token
    for special in ("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>"):
        if text.endswith(special):  # a scripted text that names its stop token
            text, stop = text[: -len(special)], special
            break
    tokens = count_tokens(text)
    if reply.finish_reason != "stop":
        return _Generated(text, reply.finish_reason, None, tokens, reply.delay)
    return _Generated(text + stop if include_stop else text, "stop",
                      None if stop == _EOS else _SPECIAL_IDS.get(stop), tokens + 1, reply.delay)


@dataclass(frozen=True)
class Failure:
    """An HTTP error answered instead of a reply (500, 429, 400 "maximum context length", ...)."""

    status: int
    message: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class StreamFailure:
    """A 200 stream that sends ``after_text`` and then an error event (non-streamed: HTTP 500)."""

    after_text: str
    message: str
    status: int = 500  # the error event's code (vLLM sends 400 for requests it rejects mid-stream)


Entry = str | Reply | Failure | StreamFailure | Callable[[dict[str, Any]], Any]

# Special tokens keep their Llama-3 ids so /tokenize output looks like the real thing.
_SPECIAL_IDS = {
    "<|begin_of_text|>": 128000,
    "<|end_of_text|>": 128001,
    "<|start_header_id|>": 128006,
    "<|end_header_id|>": 128007,
    "<|eom_id|>": 128008,
    "<|eot_id|>": 128009,
}
_BOS_ID = 128000

# One piece per special token, word (with its leading space), run of up to three
# digits, punctuation run, or whitespace run. "<" is kept out of punctuation runs
# so that a special token right after punctuation still counts as one token.
_PIECE = re.compile(r"<\|[A-Za-z0-9_]+\|>| ?[A-Za-z]+|\d{1,3}| ?[^\sA-Za-z\d<]+|<|\s+")


def tokenize(text: str) -> list[str]:
    """Split ``text`` into the scripted server's token pieces (they join back to ``text``)."""
    return _PIECE.findall(text)


def token_id(piece: str) -> int:
    if piece in _SPECIAL_IDS:
        return _SPECIAL_IDS[piece]
    if piece.startswith("<|") and piece.endswith("|>"):
        return 128010 + zlib.crc32(piece.encode()) % 240
    return zlib.crc32(piece.encode()) % 128000


def count_tokens(text: str) -> int:
    return len(tokenize(text))


def render_chat(messages: list[dict[str, Any]]) -> str:
    """The text a Llama-3 chat template would make of ``messages``; used only to count tokens."""
    parts = ["<|begin_of_text|>"]
    for message in messages:
        content = message.get("content") or ""
        if isinstance(content, list):  # OpenAI content parts
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        parts.append(f"<|start_header_id|>{message.get('role', '')}<|end_header_id|>\n\n{content}<|eot_id|>")
    parts.append("<|start_header_id|>assistant<|end_header_id|>\n\n")
    return "".join(parts)


_ERROR_TYPES = {
    400: "BadRequestError",
    401: "Unauthorized",
    404: "NotFoundError",
    429: "RateLimitError",
    500: "InternalServerError",
    503: "ServiceUnavailableError",
}


def error_body(status: int, message: str, *, nested: bool = False) -> dict[str, Any]:
    """vLLM's error body: flat (``{"object": "error", ...}``) or, as newer vLLM sends it, nested."""
    info = {"message": message, "type": _ERROR_TYPES.get(status, "Error"), "param": None, "code": status}
    if nested:
        return {"error": info}
    return {"object": "error", **info}


class _HTTPError(Exception):
    def __init__(self, status: int, message: str, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


class ScriptedServer(Loopback):
    """A loopback vLLM look-alike that plays ``script``; use as a context manager.

    ``requests`` records every request as ``(path, json_body)`` (body None for GET) and
    ``headers`` the matching request headers. ``chunk_chars`` None streams one token per
    event as vLLM does; a number streams fixed-size character chunks (to split special
    tokens across events). ``api_key`` makes the server demand ``Authorization: Bearer KEY``
    as ``vllm serve --api-key`` does. ``nested_errors`` selects the newer vLLM error body.
    """

    thread_name = "scripted-server"

    def __init__(
        self,
        script: list[Entry],
        *,
        model_id: str = "cwm-scripted",
        max_model_len: int = CONTEXT_WINDOW,
        port: int = 0,
        chunk_chars: int | None = None,
        api_key: str | None = None,
        nested_errors: bool = False,
        tokenize_endpoint: bool = True,
    ) -> None:
        self.script: list[Entry] = list(script)
        self.model_id = model_id
        self.max_model_len = max_model_len
        self.chunk_chars = chunk_chars
        self.api_key = api_key
        self.nested_errors = nested_errors
        self.tokenize_endpoint = tokenize_endpoint
        self.requests: list[tuple[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.peers: list[tuple[str, int]] = []  # client address per request (shows connection reuse)
        self._lock = threading.Lock()
        self._next = 0
        self._listen(_make_handler(self), port)

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"


    # -- script ------------------------------------------------------------------------

    @property
    def remaining(self) -> int:
        """Script entries not yet played."""
        with self._lock:
            return len(self.script) - self._next

    def generation_requests(self) -> list[tuple[str, Any]]:
        """The recorded requests to the two generation endpoints."""
        return [r for r in self.requests if r[0] in ("/v1/completions", "/v1/chat/completions")]

    def _take(self, body: dict[str, Any]) -> Reply | Failure | StreamFailure:
        with self._lock:
            if self._next >= len(self.script):
                raise _HTTPError(500, "script exhausted")
            entry = self.script[self._next]
            self._next += 1
        if callable(entry) and not isinstance(entry, (str, Reply, Failure, StreamFailure)):
            entry = entry(body)
        if isinstance(entry, str):
            return Reply(entry)
        if isinstance(entry, (Reply, Failure, StreamFailure)):
            return entry
        raise _HTTPError(500, f"bad script entry: {entry!r}")

    def _record(self, path: str, body: Any, headers: dict[str, str], peer: tuple[str, int]) -> None:
        with self._lock:
            self.requests.append((path, body))
            self.headers.append(headers)
            self.peers.append(peer)


def _make_handler(server: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        scripted = server

    return Handler


class _Handler(BaseHTTPRequestHandler):
    scripted: ScriptedServer
    # HTTP/1.1 keeps connections alive between requests, as uvicorn does for vLLM;
    # streamed bodies use chunked transfer encoding.
    protocol_version = "HTTP/1.1"
    server_version = "scripted-vllm/0.1"
    # Headers and body go out in separate writes; with Nagle's algorithm on, the client's
    # delayed ACK would hold every answer back ~40 ms (uvicorn sets TCP_NODELAY too).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet in tests
        pass

    # -- dispatch ----------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        self.scripted._record(path, None, dict(self.headers.items()), self.client_address)
        try:
            self._check_auth(path)
            if path == "/health":
                self._send_bytes(200, b"", "application/json")
            elif path == "/v1/models":
                self._send_json(200, self._models())
            else:
                raise _HTTPError(404, "Not Found")
        except _HTTPError as err:
            self._send_error(err)

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else {}
        except ValueError:
            body = None
        self.scripted._record(path, body, dict(self.headers.items()), self.client_address)
        try:
            self._check_auth(path)
            if not isinstance(body, dict):
                raise _HTTPError(400, "The request body is not valid JSON.")
            if path == "/v1/completions":
                self._generate(body, chat=False)
            elif path == "/v1/chat/completions":
                self._generate(body, chat=True)
            elif path == "/tokenize" and self.scripted.tokenize_endpoint:
                self._tokenize(body)
            else:
                raise _HTTPError(404, "Not Found")
        except _HTTPError as err:
            self._send_error(err)

    def _check_auth(self, path: str) -> None:
        key = self.scripted.api_key
        # vLLM guards only /v1; /health and /tokenize stay open.
        if key and path.startswith("/v1") and self.headers.get("Authorization") != f"Bearer {key}":
            raise _HTTPError(401, "Unauthorized")

    # -- endpoints ---------------------------------------------------------------------

    def _models(self) -> dict[str, Any]:
        s = self.scripted
        return {
            "object": "list",
            "data": [
                {
                    "id": s.model_id,
                    "object": "model",
                    "created": int(time.time()),
                    "owned_by": "vllm",
                    "root": s.model_id,
                    "parent": None,
                    "max_model_len": s.max_model_len,
                    "permission": [],
                }
            ],
        }

    def _tokenize(self, body: dict[str, Any]) -> None:
        if "messages" in body:
            text = render_chat(body["messages"])
        elif isinstance(body.get("prompt"), str):
            text = body["prompt"]
        else:
            raise _HTTPError(400, "Either 'prompt' or 'messages' is required.")
        ids = [token_id(p) for p in tokenize(text)]
        if body.get("add_special_tokens", True) and not text.startswith("<|begin_of_text|>"):
            ids.insert(0, _BOS_ID)
        self._send_json(
            200, {"count": len(ids), "max_model_len": self.scripted.max_model_len, "tokens": ids, "token_strs": None}
        )

    def _generate(self, body: dict[str, Any], *, chat: bool) -> None:
        s = self.scripted
        model = body.get("model")
        if model is not None and model != s.model_id:
            raise _HTTPError(404, f"The model `{model}` does not exist.")
        if chat:
            messages = body.get("messages")
            if not isinstance(messages, list):
                raise _HTTPError(400, "'messages' must be a list.")
            prompt_text = render_chat(messages)
        else:
            prompt = body.get("prompt")
            if not isinstance(prompt, str):
                raise _HTTPError(400, "'prompt' must be a string.")
            prompt_text = prompt
            if body.get("add_special_tokens", True):
                prompt_text = "<|begin_of_text|>" + prompt_text
        prompt_tokens = count_tokens(prompt_text)
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        requested = prompt_tokens + (max_tokens or 0)
        if requested > s.max_model_len:
            raise _HTTPError(
                400,
                f"This model's maximum context length is {s.max_model_len} tokens. However, you requested "
                f"{requested} tokens ({prompt_tokens} in the messages, {max_tokens or 0} in the completion). "
                "Please reduce the length of the messages or completion.",
            )
        entry = s._take(body)
        if isinstance(entry, Failure):
            raise _HTTPError(entry.status, entry.message, entry.headers)
        if isinstance(entry, Reply):
            entry = _generated(entry, include_stop=bool(body.get("include_stop_str_in_output")))
        stream = bool(body.get("stream"))
        if not stream:
            if isinstance(entry, StreamFailure):
                raise _HTTPError(500, entry.message)
            if entry.delay:  # as long as streaming the same reply would take
                time.sleep(entry.delay * len(list(_chunks(entry.text, s.chunk_chars))))
            self._send_json(200, _whole(entry, chat=chat, model=s.model_id, prompt_tokens=prompt_tokens))
            return
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self._stream(entry, chat=chat, prompt_tokens=prompt_tokens, include_usage=include_usage)

    def _stream(
        self, entry: _Generated | StreamFailure, *, chat: bool, prompt_tokens: int, include_usage: bool
    ) -> None:
        s = self.scripted
        text = entry.text if isinstance(entry, _Generated) else entry.after_text
        delay = entry.delay if isinstance(entry, _Generated) else 0.0
        stop_reason = entry.stop_reason if isinstance(entry, _Generated) else None
        pieces = list(_chunks(text, s.chunk_chars))
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        obj = "chat.completion.chunk" if chat else "text_completion"

        base: dict[str, Any] = {"id": rid, "object": obj, "created": created, "model": s.model_id}
        usage_field: dict[str, Any] = {"usage": None} if include_usage else {}

        def chunk(content: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, **content, "logprobs": None, "finish_reason": finish,
                      "stop_reason": stop_reason if finish else None}
            return {**base, "choices": [choice], **usage_field}

        def text_chunk(piece: str, finish: str | None = None) -> dict[str, Any]:
            return chunk({"delta": {"content": piece}} if chat else {"text": piece}, finish)

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            if chat:  # vLLM's first chat chunk names the role
                self._event(chunk({"delta": {"role": "assistant", "content": ""}}))
            finish = entry.finish_reason if isinstance(entry, _Generated) else None
            for i, piece in enumerate(pieces):
                if delay:
                    time.sleep(delay)
                # Like vLLM, the last text delta carries the finish reason.
                last = i == len(pieces) - 1 and isinstance(entry, _Generated)
                self._event(text_chunk(piece, finish if last else None))
            if isinstance(entry, StreamFailure):
                self._event({"error": error_body(entry.status, entry.message, nested=True)["error"]})
            else:
                if not pieces:
                    self._event(text_chunk("", finish))
                if include_usage:
                    completion_tokens = entry.completion_tokens
                    usage = {
                        "prompt_tokens": prompt_tokens,
                        "total_tokens": prompt_tokens + completion_tokens,
                        "completion_tokens": completion_tokens,
                    }
                    self._event({**base, "choices": [], "usage": usage})
            self._write_chunk(b"data: [DONE]\n\n")
            self._write_chunk(b"")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client hung up mid-stream

    # -- wire helpers ------------------------------------------------------------------

    def _event(self, data: dict[str, Any]) -> None:
        self._write_chunk(b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n")

    def _write_chunk(self, data: bytes) -> None:
        # One write per chunk: the frame header, payload and trailer go out together.
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _send_json(self, status: int, data: dict[str, Any], headers: tuple[tuple[str, str], ...] = ()) -> None:
        self._send_bytes(status, json.dumps(data, ensure_ascii=False).encode(), "application/json", headers)

    def _send_bytes(
        self, status: int, payload: bytes, content_type: str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        try:
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _send_error(self, err: _HTTPError) -> None:
        if err.status == 401:
            # vllm serve --api-key answers this exact body.
            self._send_json(401, {"error": "Unauthorized"}, err.headers)
            return
        body = error_body(err.status, err.message, nested=self.scripted.nested_errors)
        self._send_json(err.status, body, err.headers)


def _chunks(text: str, size: int | None) -> Iterator[str]:
    if size is None:
        yield from tokenize(text)
    else:
        for i in range(0, len(text), size):
            yield text[i : i + size]


def _whole(entry: _Generated, *, chat: bool, model: str, prompt_tokens: int) -> dict[str, Any]:
    completion_tokens = entry.completion_tokens
    usage = {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": None,
    }
    if chat:
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": entry.text, "tool_calls": []},
            "logprobs": None,
            "finish_reason": entry.finish_reason,
            "stop_reason": entry.stop_reason,
        }
        kind, prefix = "chat.completion", "chatcmpl-"
    else:
        choice = {
            "index": 0,
            "text": entry.text,
            "logprobs": None,
            "finish_reason": entry.finish_reason,
            "stop_reason": entry.stop_reason,
            "prompt_logprobs": None,
        }
        kind, prefix = "text_completion", "cmpl-"
    return {
        "id": prefix + uuid.uuid4().hex,
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": usage,
    }


def entry_from_json(item: Any) -> Entry:
    """A script entry from JSON: a string, or an object.

    ``{"text": ..., "finish_reason": "length", "delay": 0.05}`` is a Reply,
    ``{"status": 500, "message": ...}`` a Failure, and
    ``{"after_text": ..., "message": ...}`` a StreamFailure.
    """
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        if "status" in item:
            return Failure(int(item["status"]), str(item.get("message", "")))
        if "after_text" in item:
            return StreamFailure(str(item["after_text"]), str(item.get("message", "stream failed")))
        if "text" in item:
            return Reply(str(item["text"]), str(item.get("finish_reason", "stop")), float(item.get("delay", 0.0)),
                         str(item.get("stop_token", "<|eot_id|>")))
    raise ValueError(
        f"script entry {item!r} is neither a string nor an object with 'text', 'status' or 'after_text'"
    )


def load_script(path: str) -> list[Entry]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, list):
        raise ValueError(f"{path}: the script must be a JSON list of replies")
    return [entry_from_json(item) for item in data]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve scripted replies in vLLM's OpenAI-compatible wire format.")
    parser.add_argument("--script", required=True, help="JSON list of replies (strings or objects)")
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    parser.add_argument("--model-id", default="cwm-scripted")
    parser.add_argument("--max-model-len", type=int, default=CONTEXT_WINDOW)
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args(argv)
    try:
        script = load_script(args.script)
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    server = ScriptedServer(
        script, model_id=args.model_id, max_model_len=args.max_model_len, port=args.port, api_key=args.api_key
    )
    print(f"scripted server: {server.base_url} ({len(script)} replies, model {args.model_id})", flush=True)
    with server:
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
