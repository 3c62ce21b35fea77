"""tokens.py: the estimate against known Llama-3 counts, and the exact counters over real HTTP / a real tokenizer."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cwm_agent.testing.scripted_server import ScriptedServer, count_tokens
from cwm_agent.models.tokens import (
    EstimateCounter,
    HFTokenizerCounter,
    HTTPTokenizeCounter,
    TokenCounter,
    TokenizeError,
    estimate_tokens,
    server_root,
)

PYTHON = '''\
def parse_config(path: str) -> dict[str, object]:
    """Read a TOML file and return its settings, with defaults filled in."""
    import tomllib

    with open(path, "rb") as handle:
        data = tomllib.load(handle)
    settings = {"timeout": 120, "retries": 4, "model": None}
    for key, value in data.get("agent", {}).items():
        if key not in settings:
            raise KeyError(f"unknown setting {key!r} in {path}")
        settings[key] = value
    return settings


class Cache:
    def __init__(self, size: int = 128) -> None:
        self.size = size
        self._items: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        return self._items.get(key)
'''

ENGLISH = (
    "When the parser receives an empty string it raises an IndexError instead of returning an empty "
    "list. This started after the refactoring in version 2.3, where the tokenizer was rewritten to "
    "support streaming input. The expected behaviour is that an empty document produces no tokens and "
    "no error, as documented in the user guide. Steps to reproduce: install the package, call "
    "parse(''), and observe the traceback. The problem also affects documents that contain only "
    "whitespace or comments, which are common in generated configuration files."
)

SHELL = '''\
total 48
drwxr-xr-x  6 root root 4096 Nov 25 19:03 .
drwxr-xr-x 12 root root 4096 Nov 25 18:55 ..
-rw-r--r--  1 root root  107 Nov 25 19:03 __init__.py
-rw-r--r--  1 root root 11088 Nov 25 19:08 agent.py
-rw-r--r--  1 root root 13608 Nov 25 19:09 cli.py
-rw-r--r--  1 root root  3783 Nov 25 19:06 config.py
drwxr-xr-x  2 root root 4096 Nov 25 19:05 sandbox
============================= test session starts ==============================
platform linux -- Python 3.11.2, pytest-8.3.4, pluggy-1.5.0
rootdir: /testbed
collected 12 items

tests/test_parser.py ....F.......                                        [100%]
FAILED tests/test_parser.py::test_empty_input - IndexError: list index out of range
'''

JSON = '''\
{"instance_id": "astropy__astropy-12907", "repo": "astropy/astropy", "base_commit": "d16bfe05a744909de4b27f5875fe0d4ed41ce607", "version": "4.3", "FAIL_TO_PASS": ["astropy/modeling/tests/test_separable.py::test_separable[compound_model6-result6]", "astropy/modeling/tests/test_separable.py::test_separable[compound_model9-result9]"], "PASS_TO_PASS": ["astropy/modeling/tests/test_separable.py::test_coord_matrix", "astropy/modeling/tests/test_separable.py::test_cdot"], "created_at": "2022-03-03T15:14:54Z"}
'''

DIFF = '''\
diff --git a/src/parser.py b/src/parser.py
index 3b18e51..a9c4d2f 100644
--- a/src/parser.py
+++ b/src/parser.py
@@ -41,9 +41,11 @@ def parse(text: str) -> list[Token]:
     tokens: list[Token] = []
-    first = text[0]
-    if first == "#":
-        return tokens
+    if not text.strip():
+        return tokens
+    first = text.lstrip()[0]
+    if first == "#":
+        return tokens
     for line in text.splitlines():
         tokens.extend(_tokenize_line(line))
     return tokens
'''

# Token counts of the samples above under the Llama-3 tokenizer (CWM's vocabulary),
# measured once with the real tokenizer.json (add_special_tokens=False).
LLAMA3_COUNTS = {"PYTHON": 183, "ENGLISH": 100, "SHELL": 247, "JSON": 163, "DIFF": 148}
SAMPLES = {"PYTHON": PYTHON, "ENGLISH": ENGLISH, "SHELL": SHELL, "JSON": JSON, "DIFF": DIFF}


# --- the estimate ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_estimate_is_within_a_quarter_of_the_real_count(name):
    real = LLAMA3_COUNTS[name]
    assert abs(estimate_tokens(SAMPLES[name]) - real) / real < 0.25


def test_estimate_basics():
    counter = EstimateCounter()
    assert isinstance(counter, TokenCounter) and counter.exact is False
    assert counter.count("") == 0
    assert counter.count("<|eot_id|>") == 1
    assert counter.count("<|begin_of_text|><|start_header_id|>") == 2
    assert counter.count("hello<|eot_id|>") == counter.count("hello") + 1
    assert counter.count("<|frame_sep|>") == 1  # trace tokens too
    assert counter.count_many(["a b", "<|eot_id|>"]) == [counter.count("a b"), 1]
    # Text that only looks special is counted as text.
    assert counter.count("<|not special") > 1


@given(st.text(max_size=200), st.text(max_size=200))
def test_estimate_grows_with_text(a, b):
    # Only a special token completed across the join can make the sum smaller.
    if "<" not in a + b and "|" not in a + b:
        assert estimate_tokens(a + b) >= max(estimate_tokens(a), estimate_tokens(b))
    assert estimate_tokens(a) >= 0


def test_estimate_handles_any_string():
    assert estimate_tokens("\ud800 lone surrogate") > 0
    assert estimate_tokens("日本語のテキスト") >= 5  # non-ASCII is not free
    big = PYTHON * 15_000  # about 10 MB
    assert abs(estimate_tokens(big) - 15_000 * estimate_tokens(PYTHON)) <= 15_000


# --- vLLM's /tokenize over real loopback HTTP ----------------------------------------------------


def test_server_root_drops_v1():
    assert server_root("http://h:8000/v1") == "http://h:8000"
    assert server_root("http://h:8000/v1/") == "http://h:8000"
    assert server_root("http://h:8000") == "http://h:8000"


def test_counts_come_from_tokenize_outside_v1_without_special_tokens():
    text = "<|start_header_id|>user<|end_header_id|>\n\nhello world 12345<|eot_id|>"
    with ScriptedServer([]) as server, httpx.Client() as client:
        counter = HTTPTokenizeCounter(server.base_url, client)
        assert isinstance(counter, TokenCounter) and counter.exact is True
        assert counter.count(text) == count_tokens(text)  # no BOS added
        assert server.requests == [("/tokenize", {"prompt": text, "add_special_tokens": False})]
        counter.count(text)
        assert len(server.requests) == 1  # cached
        HTTPTokenizeCounter(server.base_url, client, model="cwm-scripted").count("x")
        assert server.requests[-1] == (
            "/tokenize", {"prompt": "x", "add_special_tokens": False, "model": "cwm-scripted"})


def test_count_many_requests_only_uncached_texts_once_each():
    texts = ["alpha beta", "gamma", "alpha beta", "delta 42", "x" * 1000]
    with ScriptedServer([]) as server, httpx.Client() as client:
        counter = HTTPTokenizeCounter(server.base_url, client)
        counter.count("gamma")
        assert counter.count_many(texts) == [count_tokens(t) for t in texts]
        asked = sorted(body["prompt"] for path, body in server.requests[1:])
        assert asked == sorted(["alpha beta", "delta 42", "x" * 1000])
        assert counter.count_many(texts) == [count_tokens(t) for t in texts]
        assert len(server.requests) == 4  # all cached now
        assert counter.count_many([]) == []


class _TokenizeStub(BaseHTTPRequestHandler):
    """A minimal vLLM-shaped /tokenize that can fail, stall, and records concurrency."""

    state: dict = {}

    def do_POST(self):  # noqa: N802 (http.server's naming)
        state = self.state
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with state["lock"]:
            state["in_flight"] += 1
            state["peak"] = max(state["peak"], state["in_flight"])
            status = state["statuses"].pop(0) if state["statuses"] else 200
        time.sleep(state["delay"])
        with state["lock"]:
            state["in_flight"] -= 1
        if status == 200:
            words = body["prompt"].split()
            payload = {"count": len(words), "max_model_len": 4096, "tokens": list(range(len(words)))}
        else:
            payload = {"object": "error", "message": "boom", "type": "InternalServerError", "code": status}
        raw = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args):
        pass


@pytest.fixture
def stub():
    state = {"lock": threading.Lock(), "in_flight": 0, "peak": 0, "statuses": [], "delay": 0.0}
    handler = type("Handler", (_TokenizeStub,), {"state": state})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    state["base_url"] = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def test_count_many_sends_requests_concurrently(stub):
    stub["delay"] = 0.3
    counter = HTTPTokenizeCounter(stub["base_url"])
    try:
        assert counter.count_many(["a", "a b", "a b c", "a b c d"]) == [1, 2, 3, 4]
    finally:
        counter.close()
    assert stub["peak"] >= 2


def test_server_errors_are_retried(stub):
    stub["statuses"] = [500, 503]
    counter = HTTPTokenizeCounter(stub["base_url"])
    assert counter.count("one two three") == 3
    counter.close()


def test_persistent_failure_names_the_url_and_what_to_check(stub):
    stub["statuses"] = [500, 500, 500]
    counter = HTTPTokenizeCounter(stub["base_url"], retries=2)
    with pytest.raises(TokenizeError, match=r"/tokenize failed after 3 attempts .*HTTP 500.*still up"):
        counter.count("x")
    stub["statuses"] = [404]
    with pytest.raises(TokenizeError, match=r"HTTP 404.*vLLM"):
        counter.count("y")
    counter.close()


def test_unreachable_server_is_a_tokenize_error():
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    counter = HTTPTokenizeCounter(f"http://127.0.0.1:{port}/v1", retries=0)
    with pytest.raises(TokenizeError, match="ConnectError"):
        counter.count("x")
    counter.close()


# --- a real transformers tokenizer -------------------------------------------------------------


def _tiny_tokenizer():
    """A real transformers fast tokenizer, built in memory (no download): words plus Llama-3 specials."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = ["[UNK]", "hello", "world", "def", "f", "(", ")", ":"]
    core = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.add_special_tokens(["<|begin_of_text|>", "<|eot_id|>"])
    core.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", special_tokens=[("<|begin_of_text|>", core.token_to_id("<|begin_of_text|>"))]
    )
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|begin_of_text|>", unk_token="[UNK]")


def test_hf_counter_counts_without_adding_special_tokens():
    tokenizer = _tiny_tokenizer()
    assert len(tokenizer.encode("hello world")) == 3  # this tokenizer adds a BOS by default...
    counter = HFTokenizerCounter(tokenizer)
    assert counter.exact is True and isinstance(counter, TokenCounter)
    assert counter.count("hello world") == 2  # ...the counter does not
    assert counter.count("hello<|eot_id|>world") == 3  # a special token in the text is one token
    assert counter.count("def f():") == 3 == len(tokenizer.encode("def f():", add_special_tokens=False))
    assert counter.count_many(["hello", "", "world world"]) == [1, 0, 2]
