"""The scripted vLLM stand-in speaks the real wire format (checked with plain httpx)."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest

from cwm_agent.testing.scripted_server import (
    Failure,
    Reply,
    ScriptedServer,
    StreamFailure,
    count_tokens,
    load_script,
    tokenize,
)


def sse_events(response: httpx.Response) -> list[object]:
    """Parse a server-sent event stream into JSON objects, '[DONE]' kept as the string."""
    events: list[object] = []
    for line in response.iter_lines():
        if not line:
            continue
        assert line.startswith("data: "), line
        data = line[len("data: ") :]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_tokenizer_counts_special_tokens_as_one_and_pieces_join_back() -> None:
    text = "<|begin_of_text|>x.<|eot_id|> hello  world 12345\n"
    pieces = tokenize(text)
    assert "".join(pieces) == text
    assert "<|eot_id|>" in pieces and "<|begin_of_text|>" in pieces
    assert count_tokens("<|eot_id|>") == 1
    assert count_tokens("hello world") == 2


def test_models_health_and_tokenize() -> None:
    with ScriptedServer([], model_id="cwm-test", max_model_len=4096) as server:
        with httpx.Client() as http:
            models = http.get(f"{server.base_url}/models").json()
            assert models["data"][0]["id"] == "cwm-test"
            assert models["data"][0]["max_model_len"] == 4096
            assert http.get(f"{server.root_url}/health").status_code == 200
            tok = http.post(
                f"{server.root_url}/tokenize", json={"prompt": "hi <|eot_id|>", "add_special_tokens": False}
            ).json()
            assert tok["count"] == 3 and tok["tokens"][-1] == 128009 and tok["max_model_len"] == 4096
            with_bos = http.post(f"{server.root_url}/tokenize", json={"prompt": "hi"}).json()
            assert with_bos["tokens"][0] == 128000 and with_bos["count"] == 2
            # /tokenize lives outside /v1, as in vLLM.
            assert http.post(f"{server.base_url}/tokenize", json={"prompt": "hi"}).status_code == 404


def test_streamed_completion_chunks_finish_usage_and_done() -> None:
    reply = "Hello there, this streams in pieces."
    with ScriptedServer([reply]) as server, httpx.Client() as http:
        body = {
            "prompt": "<|begin_of_text|>ab",
            "max_tokens": 50,
            "stream": True,
            "stream_options": {"include_usage": True},
            "add_special_tokens": False,
        }
        with http.stream("POST", f"{server.base_url}/completions", json=body) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            events = sse_events(response)
    assert events[-1] == "[DONE]"
    usage_event = events[-2]
    assert isinstance(usage_event, dict) and usage_event["choices"] == []
    assert usage_event["usage"] == {
        "prompt_tokens": 2,
        "completion_tokens": count_tokens(reply) + 1,  # vLLM counts the stop token
        "total_tokens": 2 + count_tokens(reply) + 1,
    }
    chunks = [e for e in events[:-2] if isinstance(e, dict)]
    assert len(chunks) > 3  # really streamed in small pieces
    assert "".join(c["choices"][0]["text"] for c in chunks) == reply
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (len(chunks) - 1) + ["stop"]
    assert server.requests == [("/v1/completions", body)]


def test_stream_without_include_usage_has_no_usage_chunk() -> None:
    with ScriptedServer(["abc def"]) as server, httpx.Client() as http:
        body = {"prompt": "x", "max_tokens": 5, "stream": True}
        with http.stream("POST", f"{server.base_url}/completions", json=body) as response:
            events = sse_events(response)
    assert events[-1] == "[DONE]"
    assert all(isinstance(e, dict) and e["choices"] and "usage" not in e for e in events[:-1])


def test_chat_stream_uses_delta_content_and_fixed_char_chunks() -> None:
    with ScriptedServer([Reply("abcdefghij", finish_reason="length")], chunk_chars=3) as server:
        with httpx.Client() as http:
            body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "stream": True}
            with http.stream("POST", f"{server.base_url}/chat/completions", json=body) as response:
                events = sse_events(response)
    chunks = [e for e in events if isinstance(e, dict)]
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    deltas = [c["choices"][0]["delta"].get("content", "") for c in chunks]
    assert deltas[1:] == ["abc", "def", "ghi", "j"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_non_streamed_completion_and_chat() -> None:
    with ScriptedServer(["one two", Reply("cut", finish_reason="length")]) as server, httpx.Client() as http:
        done = http.post(f"{server.base_url}/completions", json={"prompt": "p", "max_tokens": 9}).json()
        assert done["object"] == "text_completion"
        assert done["choices"][0]["text"] == "one two"
        assert done["choices"][0]["finish_reason"] == "stop"
        assert done["usage"]["completion_tokens"] == 3  # "one", " two" and the stop token
        assert done["choices"][0]["stop_reason"] is None  # <|eot_id|> is the end-of-sequence token
        # add_special_tokens defaults to true in vLLM: the BOS is counted.
        assert done["usage"]["prompt_tokens"] == 2
        chat = http.post(
            f"{server.base_url}/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]}
        ).json()
        assert chat["choices"][0]["message"] == {"role": "assistant", "content": "cut", "tool_calls": []}
        assert chat["choices"][0]["finish_reason"] == "length"


def test_failures_have_vllm_error_bodies_and_exhaustion_is_500() -> None:
    script = [Failure(429, "slow down", headers=(("Retry-After", "2"),)), Failure(500, "engine died")]
    with ScriptedServer(script) as server, httpx.Client() as http:
        r = http.post(f"{server.base_url}/completions", json={"prompt": "p"})
        assert r.status_code == 429 and r.headers["retry-after"] == "2"
        assert r.json() == {
            "object": "error", "message": "slow down", "type": "RateLimitError", "param": None, "code": 429
        }
        r = http.post(f"{server.base_url}/completions", json={"prompt": "p"})
        assert r.status_code == 500 and r.json()["message"] == "engine died"
        r = http.post(f"{server.base_url}/completions", json={"prompt": "p"})
        assert r.status_code == 500 and r.json()["message"] == "script exhausted"
        assert len(server.generation_requests()) == 3


def test_context_overflow_is_vllm_400_and_does_not_use_a_script_entry() -> None:
    with ScriptedServer(["fits"], max_model_len=10, nested_errors=True) as server, httpx.Client() as http:
        body = {"prompt": "a b c d e", "max_tokens": 8, "add_special_tokens": False}
        r = http.post(f"{server.base_url}/completions", json=body)
        assert r.status_code == 400
        error = r.json()["error"]
        assert error["type"] == "BadRequestError" and error["code"] == 400
        assert error["message"].startswith(
            "This model's maximum context length is 10 tokens. However, you requested 13 tokens "
            "(5 in the messages, 8 in the completion)."
        )
        assert server.remaining == 1
        ok = http.post(f"{server.base_url}/completions", json={**body, "max_tokens": 5}).json()
        assert ok["choices"][0]["text"] == "fits"


def test_stream_failure_sends_error_event_inside_200_stream() -> None:
    with ScriptedServer([StreamFailure("partial ", "engine crashed")]) as server, httpx.Client() as http:
        body = {"prompt": "p", "stream": True}
        with http.stream("POST", f"{server.base_url}/completions", json=body) as response:
            assert response.status_code == 200
            events = sse_events(response)
    assert events[-1] == "[DONE]"
    error = events[-2]
    assert isinstance(error, dict) and error["error"]["message"] == "engine crashed"
    text = "".join(e["choices"][0]["text"] for e in events[:-2] if isinstance(e, dict))
    assert text == "partial "


def test_unknown_model_is_404_and_api_key_is_enforced() -> None:
    with ScriptedServer(["x"], api_key="sekrit") as server, httpx.Client() as http:
        assert http.get(f"{server.base_url}/models").status_code == 401
        auth = {"Authorization": "Bearer sekrit"}
        r = http.post(f"{server.base_url}/completions", json={"model": "gpt-9", "prompt": "p"}, headers=auth)
        assert r.status_code == 404 and "gpt-9" in r.json()["message"]
        assert http.get(f"{server.root_url}/health").status_code == 200  # like vLLM, only /v1 is guarded
        assert server.remaining == 1


def test_callable_entries_see_the_request_and_delay_is_per_chunk() -> None:
    def echo(body: dict) -> Reply:
        return Reply(body["prompt"].upper(), delay=0.01)

    with ScriptedServer([echo]) as server, httpx.Client() as http:
        body = {"prompt": "shout", "stream": True}
        with http.stream("POST", f"{server.base_url}/completions", json=body) as response:
            events = sse_events(response)
    assert "".join(e["choices"][0]["text"] for e in events if isinstance(e, dict)) == "SHOUT"


def test_keep_alive_connection_is_reused_across_streams() -> None:
    with ScriptedServer(["a b", "c d"]) as server, httpx.Client() as http:
        for expected in ("a b", "c d"):
            with http.stream("POST", f"{server.base_url}/completions", json={"prompt": "p", "stream": True}) as r:
                got = "".join(e["choices"][0]["text"] for e in sse_events(r) if isinstance(e, dict))
            assert got == expected
    assert len(server.peers) == 2 and server.peers[0] == server.peers[1]


def test_load_script_and_cli(tmp_path) -> None:
    path = tmp_path / "script.json"
    path.write_text(
        json.dumps(
            [
                "plain",
                {"text": "cut", "finish_reason": "length", "delay": 0.0},
                {"status": 503, "message": "busy"},
                {"after_text": "half", "message": "boom"},
            ]
        )
    )
    assert load_script(str(path)) == [
        "plain",
        Reply("cut", "length", 0.0),
        Failure(503, "busy"),
        StreamFailure("half", "boom"),
    ]
    with ScriptedServer([]) as probe:  # borrow a free port, then release it
        port = probe.port
    proc = subprocess.Popen(
        [sys.executable, "-m", "cwm_agent.testing.scripted_server", "--script", str(path), "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/v1" in line
        r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={"prompt": "p"}, timeout=10)
        assert r.json()["choices"][0]["text"] == "plain"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_bad_json_entry_is_rejected(tmp_path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"nope": 1}]))
    with pytest.raises(ValueError, match="neither a string"):
        load_script(str(path))
