"""Token counters: how many CWM tokens a text is, exactly or by a fast estimate.

The agent counts tokens for the context budget, the "Remaining tokens" line and
truncation. Three counters share one small interface:

- ``HTTPTokenizeCounter``: exact, from the serving vLLM's ``POST /tokenize``.
- ``HFTokenizerCounter``: exact, from a local transformers tokenizer.
- ``EstimateCounter``: no tokenizer at hand (a generic chat endpoint): a linear
  estimate over character classes, fast enough for megabytes.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Hashable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

import httpx


@runtime_checkable
class TokenCounter(Protocol):
    exact: bool

    def count(self, text: str) -> int: ...


class TokenizeError(RuntimeError):
    """The tokenizer endpoint failed; the message says what to check."""


# --- the estimate ----------------------------------------------------------------------

# Special tokens ("<|eot_id|>", "<|frame_sep|>", ...) are single tokens.
SPECIAL_TOKEN = re.compile(r"<\|[A-Za-z0-9_]+\|>")


def _byte_table(pick: Any) -> bytes:
    return bytes(pick(b) for b in range(256))


def _byte_class(b: int) -> int:
    char = chr(b)
    if b >= 0x80:
        return 4  # a byte of a non-ASCII character
    if char.isalpha():
        return 1
    if char.isdigit():
        return 2
    if char.isspace():
        return 0
    return 3  # ASCII punctuation and symbols


# Bytes -> class code (0 whitespace, 1 letter, 2 digit, 3 punctuation, 4 non-ASCII).
_CLASSES = _byte_table(_byte_class)
# Bytes -> 1 for a space or tab (newlines excluded), else 0; "\x00\x01" counts run starts.
_BLANKS = _byte_table(lambda b: 1 if chr(b) in " \t\f\v" else 0)

# Tokens per hundred: letter, digit, punctuation, non-ASCII byte, run of spaces/tabs.
_PER_LETTER, _PER_DIGIT, _PER_PUNCT, _PER_NONASCII_BYTE, _PER_BLANK_RUN = 15, 100, 75, 23, 50


def estimate_tokens(text: str) -> int:
    """Estimate CWM (Llama-3 vocabulary) tokens: a linear model over character classes.

    tokens ~= 0.15 per letter + 1.0 per digit + 0.75 per ASCII punctuation mark
    + 0.23 per byte of non-ASCII UTF-8 + 0.5 per run of spaces/tabs, rounded up,
    plus 1 per special token. Fitted against the Llama-3 tokenizer (CWM's
    vocabulary) on 1,500 slices (100 to 8,000 characters) of Python and C source,
    shell output, JSON, diffs, English prose, TSV and non-Latin text, and checked
    on 1,500 fresh slices: mean absolute error 7%, 95% of slices within 21%, bias
    +1.5% overall and within +-10% for every kind; on a whole 10 MB mix it is
    within 0.1%. Long runs of one character (e.g. "=" * 1000) compress to few
    real tokens and are overestimated. Runs at bytes.translate/count speed
    (10 MB in about 0.1 s here).
    """
    specials = 0
    if "<|" in text:
        text, specials = SPECIAL_TOKEN.subn("", text)
    raw = text.encode("utf-8", "surrogatepass")
    classes = raw.translate(_CLASSES)
    blanks = raw.translate(_BLANKS)
    blank_runs = blanks.count(b"\x00\x01") + (blanks[:1] == b"\x01")
    hundredths = (
        _PER_LETTER * classes.count(b"\x01")
        + _PER_DIGIT * classes.count(b"\x02")
        + _PER_PUNCT * classes.count(b"\x03")
        + _PER_NONASCII_BYTE * classes.count(b"\x04")
        + _PER_BLANK_RUN * blank_runs
    )
    return specials + (hundredths + 99) // 100


class EstimateCounter:
    """A fast, approximate counter (see ``estimate_tokens`` for the heuristic and its error)."""

    exact = False

    def count(self, text: str) -> int:
        return estimate_tokens(text)

    def count_many(self, texts: Iterable[str]) -> list[int]:
        return [estimate_tokens(text) for text in texts]


# --- exact counters ----------------------------------------------------------------------


class _Cache:
    """A small thread-safe LRU of text -> count; long texts are keyed by their digest."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[Hashable, int] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(text: str) -> Hashable:
        if len(text) <= 256:
            return text
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        return (len(text), digest)

    def get(self, key: Hashable) -> int | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: int) -> None:
        if self._size <= 0:
            return
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


def server_root(base_url: str) -> str:
    """``http://host:8000/v1`` -> ``http://host:8000``: vLLM serves /tokenize outside /v1."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


class HTTPTokenizeCounter:
    """Exact counts from vLLM's ``POST {server root}/tokenize`` (no special tokens added).

    ``base_url`` is the OpenAI base URL (``.../v1``); ``client`` an httpx.Client to
    reuse (one is made when None, and closed by ``close``). Counts are cached per
    text. Transport errors, 429 and 5xx are retried twice before TokenizeError.
    """

    exact = True

    def __init__(
        self,
        base_url: str,
        client: httpx.Client | None = None,
        *,
        model: str | None = None,
        cache_size: int = 4096,
        workers: int = 8,
        retries: int = 2,
    ) -> None:
        self.url = f"{server_root(base_url)}/tokenize"
        self.model = model
        self._owns_client = client is None
        self._client = client if client is not None else httpx.Client(timeout=60.0)
        self._cache = _Cache(cache_size)
        self._workers = max(1, workers)
        self._retries = retries

    def count(self, text: str) -> int:
        key = self._cache.key(text)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        value = self._request(text)
        self._cache.put(key, value)
        return value

    def count_many(self, texts: Sequence[str]) -> list[int]:
        """Counts for many texts: cached ones at once, the others in concurrent requests."""
        keys = [self._cache.key(text) for text in texts]
        results: dict[Hashable, int] = {}
        missing: dict[Hashable, str] = {}
        for key, text in zip(keys, texts, strict=True):
            cached = self._cache.get(key)
            if cached is not None:
                results[key] = cached
            else:
                missing.setdefault(key, text)
        if len(missing) == 1:
            (key, text), = missing.items()
            results[key] = self._request(text)
            self._cache.put(key, results[key])
        elif missing:
            with ThreadPoolExecutor(max_workers=min(self._workers, len(missing))) as pool:
                counted = pool.map(self._request, missing.values())
                for key, value in zip(missing, counted, strict=True):
                    results[key] = value
                    self._cache.put(key, value)
        return [results[key] for key in keys]

    def _request(self, text: str) -> int:
        payload: dict[str, Any] = {"prompt": text, "add_special_tokens": False}
        if self.model is not None:
            payload["model"] = self.model
        problem = ""
        for attempt in range(self._retries + 1):
            if attempt:
                time.sleep(0.2 * 2 ** (attempt - 1))
            try:
                response = self._client.post(self.url, json=payload)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
                continue
            if response.status_code == 429 or response.status_code >= 500:
                problem = f"HTTP {response.status_code}: {response.text[:200]}"
                continue
            if response.status_code != 200:
                raise TokenizeError(
                    f"POST {self.url} answered HTTP {response.status_code}: {response.text[:200]}; "
                    "check that the server is vLLM (its /tokenize endpoint) or count with the estimate instead"
                )
            return self._parse(response)
        raise TokenizeError(
            f"POST {self.url} failed after {self._retries + 1} attempts ({problem}); "
            "check that the model server is still up"
        )

    def _parse(self, response: httpx.Response) -> int:
        try:
            data = response.json()
            value = data.get("count")
            if not isinstance(value, int):
                value = len(data["tokens"])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TokenizeError(
                f"POST {self.url} returned no token count ({response.text[:200]!r}); "
                "expected vLLM's {{\"count\": N, \"tokens\": [...]}}"
            ) from exc
        return value

    def close(self) -> None:
        if self._owns_client:
            self._client.close()


class HFTokenizerCounter:
    """Exact counts from a transformers tokenizer (``encode(text, add_special_tokens=False)``).

    Special tokens written in the text, such as "<|eot_id|>", count as one token
    each, as they do on the server (transformers matches added tokens in text).
    """

    exact = True

    def __init__(self, tokenizer: Any, *, cache_size: int = 1024) -> None:
        self.tokenizer = tokenizer
        self._cache = _Cache(cache_size)

    def count(self, text: str) -> int:
        key = self._cache.key(text)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        value = len(self.tokenizer.encode(text, add_special_tokens=False))
        self._cache.put(key, value)
        return value

    def count_many(self, texts: Iterable[str]) -> list[int]:
        return [self.count(text) for text in texts]
