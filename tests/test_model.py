"""The HTTP model clients against the scripted vLLM stand-in: real loopback HTTP, no mocks."""

from __future__ import annotations

import socket

import pytest

from cwm_agent.models import client as m
from cwm_agent.models.connect import connect
from cwm_agent.models.client import (
    ChatClient,
    Completion,
    ContextLengthExceeded,
    CWMClient,
    MalformedResponse,
    RateLimited,
    RequestRejected,
    ServerError,
    StreamError,
    TimedOut,
    Unreachable,
    chat_messages,
)
from cwm_agent.protocol import STOP_TOKEN_IDS, Transcript
from cwm_agent.testing.scripted_server import Failure, Reply, ScriptedServer, StreamFailure, count_tokens
from cwm_agent.models.tokens import EstimateCounter, HTTPTokenizeCounter

FAST = {"base_delay": 0.001, "max_delay": 0.01}


def transcript() -> Transcript:
    t = Transcript.start("You are a helpful AI assistant.", "Fix the bug in foo.py", reasoning=True)
    t.add_assistant("Let me look.\n</think>\n<tool: bash>\ncat foo.py\n</tool>")
    t.add_tool_result("bash", "<output>\nprint('hi')\n</output>\n")
    return t


def cwm(server: ScriptedServer, **kw) -> CWMClient:
    return CWMClient(server.base_url, model=server.model_id, **{**FAST, **kw})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- request shape ---------------------------------------------------------------------


def test_cwm_request_is_byte_exact_and_streams_in_order() -> None:
    reply = "I see it.\n</think>\n<tool: bash>\nsed -i s/hi/bye/ foo.py\n</tool>"
    t = transcript()
    deltas: list[str] = []
    with ScriptedServer([reply]) as server, cwm(server) as client:
        done = client.complete(t, max_tokens=777, on_text=deltas.append)
    assert server.requests == [
        (
            "/v1/completions",
            {
                "model": "cwm-scripted",
                "prompt": t.prompt,
                "max_tokens": 777,
                "temperature": 1.0,
                "top_p": 0.95,
                "stop_token_ids": [128001, 128008, 128009],
                "add_special_tokens": False,
                "skip_special_tokens": False,
                "stream": True,
                "stream_options": {"include_usage": True},
                "include_stop_str_in_output": True,
            },
        )
    ]
    assert list(STOP_TOKEN_IDS) == [128001, 128008, 128009]
    assert len(deltas) > 5 and "".join(deltas) == reply
    assert done.text == reply
    assert done.finish_reason == "stop" and not done.cut_off
    assert done.prompt_tokens == count_tokens(t.prompt)
    assert done.completion_tokens == count_tokens(reply) + 1  # the stop token counts, as in vLLM
    assert done.stop == "<|eot_id|>"  # kept by the server (include_stop_str_in_output), split off here
    assert done.seconds > 0


def test_prompt_text_is_sent_unchanged_including_unicode_and_special_tokens() -> None:
    t = Transcript.start("sys", "naïve — ünïcödé \u2603 <|eot_id|> \\ \"quotes\"", reasoning=False)
    with ScriptedServer(["ok"]) as server, cwm(server) as client:
        client.complete(t, max_tokens=5)
    assert server.requests[0][1]["prompt"] == t.prompt
    assert t.prompt.startswith("<|begin_of_text|>")


def test_api_key_goes_in_bearer_header() -> None:
    with ScriptedServer(["ok"], api_key="k-123") as server:
        with CWMClient(server.base_url, model=server.model_id, api_key="k-123", **FAST) as client:
            assert client.complete(transcript(), max_tokens=5).text == "ok"
        assert {k.lower(): v for k, v in server.headers[-1].items()}["authorization"] == "Bearer k-123"
        with CWMClient(server.base_url, model=server.model_id, api_key="wrong", **FAST) as client:
            with pytest.raises(RequestRejected, match="api-key") as info:
                client.complete(transcript(), max_tokens=5)
        assert info.value.status == 401 and info.value.attempts == 1


def test_complete_text_passes_sampling_and_stop_strings() -> None:
    with ScriptedServer(["predicted output\n"]) as server, cwm(server) as client:
        done = client.complete_text(
            "<|begin_of_text|>x", max_tokens=64, temperature=0.2, top_p=0.9, stop=["</output>"], stop_token_ids=[128100]
        )
    body = server.requests[0][1]
    assert body["temperature"] == 0.2 and body["top_p"] == 0.9
    assert body["stop"] == ["</output>"] and body["stop_token_ids"] == [128100]
    assert done.text == "predicted output\n"


def test_non_streamed_request_shape_and_result() -> None:
    with ScriptedServer([Reply("whole reply", finish_reason="length")]) as server, cwm(server, stream=False) as c:
        seen: list[str] = []
        done = c.complete(transcript(), max_tokens=9, on_text=seen.append)
    body = server.requests[0][1]
    assert body["stream"] is False and "stream_options" not in body
    assert done.text == "whole reply" and seen == ["whole reply"]
    assert done.cut_off and done.completion_tokens == 2


# -- stop tokens -----------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [None, 1, 3, 7])
def test_trailing_stop_token_is_stripped_and_never_shown(chunk: int | None) -> None:
    reply = "a <|eo b\n</think>\n<tool: bash>\nls\n</tool><|eot_id|>"
    deltas: list[str] = []
    with ScriptedServer([reply], chunk_chars=chunk) as server, cwm(server) as client:
        done = client.complete(transcript(), max_tokens=50, on_text=deltas.append)
    assert done.text == reply.removesuffix("<|eot_id|>")
    assert "".join(deltas) == done.text
    # Text that only looked like the start of a stop token is still shown.
    assert "<|eo b" in "".join(deltas)


def test_stop_token_in_the_middle_is_kept() -> None:
    reply = "x<|eom_id|>y"
    with ScriptedServer([reply], chunk_chars=2) as server, cwm(server) as client:
        seen: list[str] = []
        assert client.complete(transcript(), max_tokens=5, on_text=seen.append).text == reply
    assert "".join(seen) == reply


def test_transcript_appends_eot_after_stripped_reply() -> None:
    t = transcript()
    with ScriptedServer(["done\n</think>\n<tool: submit>\np.diff\n</tool><|eot_id|>"]) as server, cwm(server) as c:
        done = c.complete(t, max_tokens=50)
    before = t.prompt
    t.add_assistant(done.text)
    assert t.prompt.startswith(before + done.text + "<|eot_id|>")
    assert "<|eot_id|><|eot_id|>" not in t.prompt


# -- finish and usage ------------------------------------------------------------------


def test_finish_length_is_cut_off_not_an_error() -> None:
    with ScriptedServer([Reply("half a thou", finish_reason="length")]) as server, cwm(server) as client:
        done = client.complete(transcript(), max_tokens=3)
    assert isinstance(done, Completion) and done.cut_off and done.finish_reason == "length"
    assert done.text == "half a thou"


def test_usage_missing_leaves_counts_none() -> None:
    # A server that ignores include_usage: the counts are unknown, not zero.
    def no_usage(conn: socket.socket) -> None:
        body = (
            b'data: {"choices": [{"index": 0, "text": "ok", "finish_reason": null}]}\n\n'
            b'data: {"choices": [{"index": 0, "text": "", "finish_reason": "stop"}]}\n\n'
            b"data: [DONE]\n\n"
        )
        conn.sendall(_sse_head(len(body)) + body)

    sock, port = _one_shot_server(no_usage)
    try:
        client = CWMClient(f"http://127.0.0.1:{port}/v1", model="cwm", retries=0)
        done = client.complete(transcript(), max_tokens=5)
    finally:
        sock.close()
    assert done.text == "ok" and done.finish_reason == "stop"
    assert done.prompt_tokens is None and done.completion_tokens is None


def test_non_streamed_chat_usage() -> None:
    with ScriptedServer(["ok"]) as server, ChatClient(server.base_url, model=server.model_id, stream=False) as chat:
        whole = chat.complete(transcript(), max_tokens=5)
    assert whole.text == "ok" and whole.completion_tokens == 2 and whole.prompt_tokens  # "ok" + its stop token


# -- errors and retries ----------------------------------------------------------------


def test_context_length_exceeded_is_named_and_not_retried() -> None:
    with ScriptedServer(["never"], max_model_len=50) as server, cwm(server) as client:
        with pytest.raises(ContextLengthExceeded, match="maximum context length is 50") as info:
            client.complete(transcript(), max_tokens=1000)
        assert info.value.kind == "context_length" and not info.value.retryable
        assert len(server.generation_requests()) == 1


def test_context_length_in_nested_error_body_too() -> None:
    script = [Failure(400, "This model's maximum context length is 8 tokens. However, you requested 9 tokens")]
    with ScriptedServer(script, nested_errors=True) as server, cwm(server) as client:
        with pytest.raises(ContextLengthExceeded):
            client.complete(transcript(), max_tokens=1)


def test_retry_then_success_counts_requests() -> None:
    retries: list[tuple[str, int, float]] = []
    script = [Failure(500, "engine hiccup"), Failure(503, "loading"), "finally"]
    with ScriptedServer(script) as server:
        client = cwm(server, retries=4, on_retry=lambda e, n, d: retries.append((e.kind, n, d)))
        done = client.complete(transcript(), max_tokens=5)
        assert done.text == "finally"
        assert len(server.generation_requests()) == 3
    assert [(k, n) for k, n, _ in retries] == [("server_error", 1), ("server_error", 2)]
    assert all(0 <= d <= 0.01 for _, _, d in retries)


def test_retries_exhausted_raises_last_error_with_attempts() -> None:
    with ScriptedServer([Failure(500, "down")] * 5) as server, cwm(server, retries=2) as client:
        with pytest.raises(ServerError, match="down") as info:
            client.complete(transcript(), max_tokens=5)
        assert info.value.attempts == 3 and info.value.status == 500
        assert len(server.generation_requests()) == 3 and server.remaining == 2


def test_rate_limited_is_retried_and_honours_retry_after() -> None:
    waits: list[float] = []
    script = [Failure(429, "too many", headers=(("Retry-After", "0.05"),)), "ok"]
    with ScriptedServer(script) as server:
        client = cwm(server, base_delay=0.001, max_delay=1.0, on_retry=lambda e, n, d: waits.append(d))
        assert client.complete(transcript(), max_tokens=5).text == "ok"
    assert waits and waits[0] >= 0.05


def test_rate_limited_error_when_retries_are_off() -> None:
    with ScriptedServer([Failure(429, "slow down")]) as server, cwm(server, retries=0) as client:
        with pytest.raises(RateLimited) as info:
            client.complete(transcript(), max_tokens=5)
    assert info.value.retryable and info.value.kind == "rate_limited"


@pytest.mark.parametrize(
    ("status", "error"), [(400, RequestRejected), (404, RequestRejected), (422, RequestRejected)]
)
def test_non_retryable_errors_are_not_retried(status: int, error: type[Exception]) -> None:
    with ScriptedServer([Failure(status, "bad request"), "unused"]) as server, cwm(server, retries=4) as client:
        with pytest.raises(error):
            client.complete(transcript(), max_tokens=5)
        assert len(server.generation_requests()) == 1 and server.remaining == 1


def test_unknown_model_name_is_rejected_with_a_hint() -> None:
    with ScriptedServer(["x"]) as server, CWMClient(server.base_url, model="nope", **FAST) as client:
        with pytest.raises(RequestRejected, match="--base-url"):
            client.complete(transcript(), max_tokens=5)


def test_stream_error_event_is_retried_then_raised() -> None:
    script = [StreamFailure("partial ", "engine crashed"), StreamFailure("again ", "engine crashed")]
    seen: list[str] = []
    with ScriptedServer(script) as server, cwm(server, retries=1) as client:
        with pytest.raises(StreamError, match="engine crashed") as info:
            client.complete(transcript(), max_tokens=5, on_text=seen.append)
        assert info.value.retryable and info.value.attempts == 2
        assert len(server.generation_requests()) == 2
    assert "".join(seen) == "partial again "  # what was shown before each failure


def test_request_rejected_inside_the_stream_is_not_retried() -> None:
    # vLLM validates some fields (out-of-vocabulary stop ids) after the stream has begun.
    script = [StreamFailure("", "stop_token_ids contains out-of-vocab token ids", status=400), "unused"]
    with ScriptedServer(script) as server, cwm(server, retries=3) as client:
        with pytest.raises(RequestRejected, match="out-of-vocab") as info:
            client.complete(transcript(), max_tokens=5)
        assert not info.value.retryable and info.value.attempts == 1
        assert len(server.generation_requests()) == 1


def test_stream_error_then_success() -> None:
    with ScriptedServer([StreamFailure("par", "boom"), "complete reply"]) as server, cwm(server) as client:
        assert client.complete(transcript(), max_tokens=5).text == "complete reply"


def test_unreachable_port_fails_fast() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    client = CWMClient(url, model="cwm", retries=1, **FAST)
    with pytest.raises(Unreachable, match="--base-url") as info:
        client.complete(transcript(), max_tokens=5)
    assert info.value.retryable and info.value.attempts == 2


def _read_request(conn: socket.socket) -> bytes:
    """Read one whole HTTP request (closing a socket with unread data would reset it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += conn.recv(65536)
    return body


def _one_shot_server(handler) -> tuple[socket.socket, int]:
    """A raw socket server for answers no real server would send (stalls, garbage)."""
    import threading

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            with conn:
                _read_request(conn)
                handler(conn)

    threading.Thread(target=serve, daemon=True).start()
    return sock, sock.getsockname()[1]


def test_read_timeout_is_timed_out() -> None:
    stop = __import__("threading").Event()
    sock, port = _one_shot_server(lambda conn: stop.wait(5))
    try:
        client = CWMClient(f"http://127.0.0.1:{port}/v1", model="cwm", retries=0, timeout=0.3, **FAST)
        with pytest.raises(TimedOut) as info:
            client.complete(transcript(), max_tokens=5)
        assert info.value.retryable
    finally:
        stop.set()
        sock.close()


def _sse_head(length: int) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
        % length
)


def test_malformed_responses() -> None:
    def garbage(conn: socket.socket) -> None:
        body = b"data: {not json}\n\n"
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(body), body)
        )

    sock, port = _one_shot_server(garbage)
    try:
        client = CWMClient(f"http://127.0.0.1:{port}/v1", model="cwm", retries=3, **FAST)
        with pytest.raises(MalformedResponse) as info:
            client.complete(transcript(), max_tokens=5)
        assert not info.value.retryable and info.value.attempts == 1
    finally:
        sock.close()


def test_stream_that_ends_early_is_a_stream_error() -> None:
    def truncated(conn: socket.socket) -> None:
        body = b'data: {"choices": [{"index": 0, "text": "par", "finish_reason": null}]}\n\n'
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(body), body)
        )

    sock, port = _one_shot_server(truncated)
    try:
        client = CWMClient(f"http://127.0.0.1:{port}/v1", model="cwm", retries=0, **FAST)
        with pytest.raises(StreamError, match="ended before"):
            client.complete(transcript(), max_tokens=5)
    finally:
        sock.close()


# -- chat client -----------------------------------------------------------------------


def test_chat_message_mapping() -> None:
    t = transcript()
    t.add_assistant("Run it.\n</think>\n<tool: bash>\npython foo.py\n</tool>")
    t.add_tool_result("bash", "<output>\nhi\n</output>\n")
    mapped = chat_messages(t)
    roles = [msg["role"] for msg in mapped]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert [msg["content"] for msg in mapped] == [
        (b if not r.startswith("tool: ") else f"[{r} result]\n" + b) for r, b in t.messages
    ]
    assert mapped[3]["content"].startswith("[tool: bash result]\n<output>\nprint('hi')")
    assert mapped[2]["content"] == t.messages[2][1]  # assistant body as rendered (with the think prefix)
    assert mapped[2]["content"].startswith("<think>\n")


def test_chat_client_request_and_stream() -> None:
    t = transcript()
    deltas: list[str] = []
    with ScriptedServer(["chat says hi there"], model_id="gpt-oss") as server:
        with ChatClient(server.base_url, model="gpt-oss", **FAST) as client:
            done = client.complete(t, max_tokens=40, on_text=deltas.append)
    path, body = server.requests[0]
    assert path == "/v1/chat/completions"
    assert body == {
        "model": "gpt-oss",
        "messages": chat_messages(t),
        "max_tokens": 40,
        "temperature": 1.0,
        "top_p": 0.95,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    assert done.text == "chat says hi there" and "".join(deltas) == done.text and len(deltas) > 1
    assert done.completion_tokens == count_tokens("chat says hi there") + 1  # its stop token too


def test_chat_client_can_omit_sampling() -> None:
    with ScriptedServer([Reply("cut", finish_reason="length")]) as server:
        with ChatClient(server.base_url, model=server.model_id, temperature=None, top_p=None) as client:
            assert client.complete(transcript(), max_tokens=1).cut_off
    assert "temperature" not in server.requests[0][1] and "top_p" not in server.requests[0][1]


# -- connect ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model_id", "override", "expected"),
    [
        ("facebook/cwm", None, CWMClient),
        ("CWM-32B-fp8", None, CWMClient),
        ("Qwen3-Coder", None, ChatClient),
        ("facebook/cwm", "chat", ChatClient),
        ("Qwen3-Coder", "cwm", CWMClient),
    ],
)
def test_connect_picks_format(model_id: str, override: str | None, expected: type) -> None:
    with ScriptedServer(["hello"], model_id=model_id, max_model_len=32768) as server:
        client = connect(base_url=server.base_url, model=None, api_key=None, format=override, **FAST)
        try:
            assert type(client) is expected
            assert client.format == ("cwm" if expected is CWMClient else "chat")
            assert client.name == model_id and client.max_context == 32768
            assert isinstance(client.counter, HTTPTokenizeCounter)
            assert client.complete(transcript(), max_tokens=5).text == "hello"
        finally:
            client.close()
        assert server.requests[0][0] == "/v1/models"


def test_connect_without_tokenize_uses_estimate_and_passes_api_key() -> None:
    with ScriptedServer(["x"], tokenize_endpoint=False, api_key="key") as server:
        client = connect(base_url=server.base_url, model="cwm-scripted", api_key="key", format=None)
        try:
            assert isinstance(client.counter, EstimateCounter)
            client.complete(transcript(), max_tokens=3)
        finally:
            client.close()
        sent = [{k.lower(): v for k, v in h.items()} for h in server.headers]
        assert [h.get("authorization") for h in sent] == ["Bearer key"] * len(sent)


def test_connect_tokenize_counter_counts_with_the_server() -> None:
    with ScriptedServer([]) as server:
        client = connect(base_url=server.base_url, model=None, api_key=None, format=None)
        try:
            text = "<|begin_of_text|>hello world<|eot_id|>"
            assert client.counter.count(text) == count_tokens(text) == 4
        finally:
            client.close()


def test_connect_adds_missing_v1() -> None:
    with ScriptedServer(["ok"]) as server:
        client = connect(base_url=server.root_url, model=None, api_key=None, format=None)
        try:
            assert client.complete(transcript(), max_tokens=3).text == "ok"
        finally:
            client.close()
        assert server.generation_requests()[0][0] == "/v1/completions"


def test_connect_unknown_model_lists_what_is_served() -> None:
    with ScriptedServer([], model_id="cwm-a") as server:
        with pytest.raises(RequestRejected, match="serves: cwm-a"):
            connect(base_url=server.base_url, model="cwm-b", api_key=None, format=None)


def test_connect_unreachable_says_what_to_do() -> None:
    with pytest.raises(Unreachable, match="--base-url") as info:
        connect(base_url=f"http://127.0.0.1:{free_port()}/v1", model=None, api_key=None, format=None)
    assert "cwm-agent serve" in str(info.value)
    assert info.value.attempts == 1  # connect does not retry: a wrong URL is reported at once


def test_connect_rejects_bad_format() -> None:
    with pytest.raises(ValueError, match="cwm' or 'chat"):
        connect(base_url="http://127.0.0.1:1/v1", model=None, api_key=None, format="xml")


def test_connect_without_base_url_is_the_local_model_lazily() -> None:
    from cwm_agent.models.local import NOTICE, LocalModel

    client = connect(base_url=None, model=None, api_key=None, format=None)
    assert isinstance(client, LocalModel) and client.format == "chat" and client.max_context == 8192
    assert "--base-url" in NOTICE and "\n" not in NOTICE
    with pytest.raises(ValueError, match="chat format only"):
        connect(base_url=None, model=None, api_key=None, format="cwm")


def test_error_kinds_and_retryability() -> None:
    table = {
        m.ContextLengthExceeded: ("context_length", False),
        m.RateLimited: ("rate_limited", True),
        m.ServerError: ("server_error", True),
        m.Unreachable: ("unreachable", True),
        m.TimedOut: ("timeout", True),
        m.MalformedResponse: ("malformed", False),
        m.StreamError: ("stream_error", True),
        m.RequestRejected: ("rejected", False),
    }
    for cls, (kind, retryable) in table.items():
        err = cls("x")
        assert isinstance(err, m.ModelError) and (err.kind, err.retryable) == (kind, retryable)


def test_backoff_is_full_jitter_and_capped() -> None:
    import random

    policy = m.RetryPolicy(retries=9, base_delay=1.0, max_delay=4.0, rng=random.Random(7))
    waits = [policy.delay(n, m.ServerError("x")) for n in range(8) for _ in range(50)]
    assert all(0 <= w <= 4.0 for w in waits)
    first = [policy.delay(0, m.ServerError("x")) for _ in range(200)]
    assert max(first) <= 1.0 and min(first) < 0.1  # uniform from zero, not a fixed step


def test_streaming_is_incremental() -> None:
    """The first delta reaches on_text while the server still holds back the rest."""
    import threading

    shown = threading.Event()
    waited: list[bool] = []

    def two_halves(conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n")
        conn.sendall(b'data: {"choices": [{"index": 0, "text": "first ", "finish_reason": null}]}\n\n')
        waited.append(shown.wait(10))  # the rest only after the client has shown the first part
        conn.sendall(b'data: {"choices": [{"index": 0, "text": "second", "finish_reason": "stop"}]}\n\n')
        conn.sendall(b"data: [DONE]\n\n")

    sock, port = _one_shot_server(two_halves)
    try:
        client = CWMClient(f"http://127.0.0.1:{port}/v1", model="cwm", retries=0)
        seen: list[str] = []

        def on_text(delta: str) -> None:
            seen.append(delta)
            shown.set()

        done = client.complete(transcript(), max_tokens=5, on_text=on_text)
    finally:
        sock.close()
    assert waited == [True] and seen == ["first ", "second"] and done.text == "first second"


def test_bad_url_scheme_is_rejected_not_retried() -> None:
    client = CWMClient("ftp://127.0.0.1/v1", model="cwm", retries=3, **FAST)
    with pytest.raises(RequestRejected, match="base-url") as info:
        client.complete(transcript(), max_tokens=1)
    assert info.value.attempts == 1


@pytest.mark.slow
def test_local_model_really_generates() -> None:
    from cwm_agent.models.local import LocalModel, find_gguf
    from cwm_agent.models.tokens import HFTokenizerCounter

    assert find_gguf().endswith(".gguf")
    local = LocalModel()
    t = Transcript.start("You are a helpful AI assistant.", "Say hello.", reasoning=False)
    seen: list[str] = []
    done = local.complete(t, max_tokens=4, on_text=seen.append)
    assert done.text.strip() and "".join(seen) == done.text
    assert done.completion_tokens is not None and 1 <= done.completion_tokens <= 4
    assert done.finish_reason in ("stop", "length") and done.prompt_tokens
    assert isinstance(local.counter, HFTokenizerCounter) and local.counter.count("hello world") >= 2
    # Greedy decoding: the same transcript gives the same reply (from the cached model).
    assert local.complete(t, max_tokens=4).text == done.text


# --- stop tokens as CWM's transcript keeps them (issue 11, item 6) ----------------------------------


@pytest.mark.parametrize("stream", [True, False])
def test_the_generated_stop_token_comes_back_eom_included(stream):
    script = ["a</think>\n<tool: bash>\nls\n</tool>",
              Reply("b</think>\n<tool: bash>\nls\n</tool>", stop_token="<|eom_id|>"),
              Reply("c and then the tokens ran o", finish_reason="length")]
    with ScriptedServer(script) as server, CWMClient(server.base_url, model=server.model_id, stream=stream) as c:
        shown: list[str] = []
        eot = c.complete(transcript(), max_tokens=50, on_text=shown.append)
        eom = c.complete(transcript(), max_tokens=50, on_text=shown.append)
        cut = c.complete(transcript(), max_tokens=50)
    assert (eot.text, eot.stop) == ("a</think>\n<tool: bash>\nls\n</tool>", "<|eot_id|>")
    assert (eom.text, eom.stop) == ("b</think>\n<tool: bash>\nls\n</tool>", "<|eom_id|>")
    assert (cut.text, cut.stop, cut.cut_off) == ("c and then the tokens ran o", None, True)
    assert eom.completion_tokens == count_tokens(eom.text) + 1 and cut.completion_tokens == count_tokens(cut.text)
    assert "<|" not in "".join(shown)  # the live view never shows a stop token


def test_a_server_that_drops_the_stop_text_is_read_by_stop_reason():
    def drop(body):  # a server that ignores include_stop_str_in_output
        body.pop("include_stop_str_in_output", None)
        return Reply("b</think>\n<tool: bash>\nls\n</tool>", stop_token="<|eom_id|>")

    with ScriptedServer([drop, "plain"]) as server, CWMClient(server.base_url, model=server.model_id) as c:
        eom = c.complete(transcript(), max_tokens=50)
    assert (eom.text, eom.stop) == ("b</think>\n<tool: bash>\nls\n</tool>", "<|eom_id|>")
    assert m.stop_token(None, "stop", None) == "<|eot_id|>"  # end of sequence: CWM's is <|eot_id|>
    assert m.stop_token(None, "stop", "</output>") is None  # a stop string is no token
    assert m.stop_token(None, "length", 128009) is None


def test_another_models_own_stop_token_is_split_off():
    assert m.split_stop("hello<|im_end|>") == ("hello", "<|im_end|>")
    assert m.split_stop("hello<|im_end|>", stopped=False) == ("hello<|im_end|>", None)
    assert m.split_stop("a < b") == ("a < b", None)


def test_stop_tail_holds_back_only_what_may_be_a_special_token():
    shown: list[str] = []
    tail = m.StopTail(shown.append)
    for piece in ["x <", " y <|", "eo", "m_id|", ">"]:
        tail.feed(piece)
    assert tail.finish(True) == "x < y <|eom_id|>"
    assert "".join(shown) == "x < y "


def test_the_cwm_client_samples_with_the_configured_temperature_and_top_p():
    with ScriptedServer(["a", "b"]) as server:
        with CWMClient(server.base_url, model=server.model_id, temperature=0.2, top_p=0.5) as c:
            c.complete(transcript(), max_tokens=5)
        with connect(base_url=server.base_url, temperature=0.7, top_p=0.8) as c:
            c.complete(transcript(), max_tokens=5)
    first, second = (body for _, body in server.generation_requests())
    assert (first["temperature"], first["top_p"]) == (0.2, 0.5)
    assert (second["temperature"], second["top_p"]) == (0.7, 0.8)
