"""Model clients over HTTP: CWM's raw-text completions, and any OpenAI-compatible chat endpoint.

``CWMClient`` sends the CWM transcript as text to ``POST /v1/completions`` exactly as
CWM's scaffold did (no second BOS, special tokens kept, CWM's stop token ids).
``ChatClient`` speaks the same text tool protocol to any ``/chat/completions``
endpoint. Both stream (server-sent events), report each text delta to ``on_text``,
retry retryable failures with exponential backoff and full jitter, and raise one
of the named ``ModelError`` kinds otherwise. ``connect.py`` picks the client from the
server's ``/models`` list; the embedded CPU model lives in ``local.py``.

Stop tokens: CWM's transcript keeps the stop token the model generated (<|eot_id|>, or
<|eom_id|>, ...), with <|eot_id|> after it when it was another one (cwm/rl/envs/dialog.py
``transition``). ``CWMClient`` asks vLLM to keep the stop token's text in the reply
(``include_stop_str_in_output``) and reads ``stop_reason``; ``Completion.text`` is the reply
without that token and ``Completion.stop`` the token itself (None when the reply was cut off).
While streaming, text that could be the start of a special token is held back until it is
known not to be a stop token, so ``on_text`` never shows one.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import httpx

from cwm_agent.protocol import EOT, STOP_TEXTS, STOP_TOKEN_IDS, STOP_TOKENS, TEMPERATURE, TOP_P
from cwm_agent.models.tokens import SPECIAL_TOKEN, EstimateCounter, TokenCounter

if TYPE_CHECKING:
    from cwm_agent.protocol import Transcript

Format = Literal["cwm", "chat"]
OnText = Callable[[str], None]
OnRetry = Callable[["ModelError", int, float], None]

@dataclass
class Completion:
    """One generated reply. ``seconds`` is the wall time of the request that produced it."""

    text: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None  # vLLM's count includes the stop token
    seconds: float
    stop: str | None = None  # the stop token the model generated; None: cut off (or none known)

    @property
    def cut_off(self) -> bool:
        """The reply hit max_tokens (or the context end) before a stop token."""
        return self.finish_reason == "length"


class Model(Protocol):
    name: str
    format: Format
    max_context: int | None
    counter: TokenCounter

    def complete(self, transcript: Transcript, *, max_tokens: int, on_text: OnText | None = None) -> Completion: ...


# -- errors -------------------------------------------------------------------------------


class ModelError(Exception):
    """A model request failed. ``kind`` names the failure; ``retryable`` says whether trying again may help."""

    kind = "model_error"
    retryable = False

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.attempts = 1  # requests made before giving up


class ContextLengthExceeded(ModelError):
    """The prompt plus max_tokens does not fit the server's context window."""

    kind = "context_length"


class RateLimited(ModelError):
    """HTTP 429. ``retry_after`` is the server's Retry-After in seconds, when it sent one."""

    kind = "rate_limited"
    retryable = True

    def __init__(self, message: str, *, status: int | None = 429, retry_after: float | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class ServerError(ModelError):
    """HTTP 5xx, or the connection dropped before an answer."""

    kind = "server_error"
    retryable = True


class Unreachable(ModelError):
    """No connection could be made to the server."""

    kind = "unreachable"
    retryable = True


class TimedOut(ModelError):
    """The server stopped sending for longer than the read timeout."""

    kind = "timeout"
    retryable = True


class MalformedResponse(ModelError):
    """The server answered something that is not the OpenAI/vLLM wire format."""

    kind = "malformed"


class StreamError(ModelError):
    """An error event inside a 200 event stream (vLLM's way to report a failure mid-generation)."""

    kind = "stream_error"
    retryable = True


class RequestRejected(ModelError):
    """Any other 4xx: bad key, unknown model or path, invalid request. Retrying will not help."""

    kind = "rejected"


_CONTEXT_MARKERS = ("maximum context length", "maximum model length", "context_length_exceeded")
_HINTS = {
    401: "check --api-key (or CWM_AGENT_API_KEY)",
    403: "check --api-key (or CWM_AGENT_API_KEY)",
    404: "check --base-url (it should end in /v1) and --model",
}


def _error_message(response: httpx.Response) -> str:
    """The message of a vLLM/OpenAI error body: flat, nested under "error", or a bare string."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, str):
            return inner
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"]
        if isinstance(body.get("detail"), str):  # FastAPI's own errors
            return body["detail"]
    return json.dumps(body)[:500]


def error_for_status(response: httpx.Response) -> ModelError:
    """The named error for a non-200 answer."""
    status = response.status_code
    message = _error_message(response)
    where = f"{response.request.method} {response.request.url}"
    if status in (400, 413, 422) and any(m in message.lower() for m in _CONTEXT_MARKERS):
        return ContextLengthExceeded(message, status=status)
    if status == 429:
        return RateLimited(
            f"rate limited by {where}: {message}", retry_after=_retry_after(response.headers.get("retry-after"))
        )
    if status == 408:
        return TimedOut(f"{where} timed out on the server: {message}", status=status)
    if status >= 500:
        return ServerError(f"server error {status} from {where}: {message}", status=status)
    hint = _HINTS.get(status, "the request was rejected; see the message")
    return RequestRejected(f"HTTP {status} from {where}: {message} ({hint})", status=status)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:  # an HTTP date: not worth parsing, backoff covers it
        return None


def transport_error(exc: httpx.HTTPError, url: str, *, streaming: bool) -> ModelError:
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return Unreachable(
            f"cannot connect to {url} ({exc}); is the model server running? Check --base-url, "
            "or start one with `cwm-agent serve`"
        )
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return RequestRejected(f"bad URL {url!r} ({exc}); --base-url should look like http://HOST:8000/v1")
    if isinstance(exc, httpx.TimeoutException):
        return TimedOut(f"no answer from {url} within the timeout ({type(exc).__name__}); the server may be overloaded")
    if streaming:
        return StreamError(f"the connection to {url} dropped mid-reply ({exc})")
    return ServerError(f"the connection to {url} failed ({exc})")


# -- retries ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` extra attempts; the n-th waits uniform(0, min(max_delay, base_delay * 2**n)) seconds."""

    retries: int = 4
    base_delay: float = 1.0
    max_delay: float = 30.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def delay(self, retry: int, error: ModelError) -> float:
        wait = self.rng.uniform(0.0, min(self.max_delay, self.base_delay * 2**retry))
        if isinstance(error, RateLimited) and error.retry_after is not None:
            wait = max(wait, min(error.retry_after, self.max_delay))
        return wait

    def run(self, attempt: Callable[[], Completion], on_retry: OnRetry | None = None) -> Completion:
        retry = 0
        while True:
            try:
                return attempt()
            except ModelError as error:
                error.attempts = retry + 1
                if not error.retryable or retry >= self.retries:
                    raise
                wait = self.delay(retry, error)
                if on_retry is not None:
                    on_retry(error, retry + 1, wait)
                time.sleep(wait)
                retry += 1


# -- streaming ----------------------------------------------------------------------------


def iter_sse(lines: Iterable[str]) -> Iterator[str]:
    """The data of each server-sent event (multi-line data joined with newlines)."""
    data: list[str] = []
    for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
        elif line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
        # other fields (event:, id:, retry:) and comments (":") carry nothing for us
    if data:
        yield "\n".join(data)


class StopTail:
    """Forwards streamed text to ``on_text`` while holding back what may be a trailing stop token."""

    def __init__(self, on_text: OnText | None) -> None:
        self.on_text = on_text
        self.parts: list[str] = []
        self.pending = ""

    def feed(self, delta: str) -> None:
        if not delta:
            return
        self.parts.append(delta)
        text = self.pending + delta
        hold = _held_suffix(text)
        emit, self.pending = text[: len(text) - hold], text[len(text) - hold :]
        if emit and self.on_text is not None:
            self.on_text(emit)

    def finish(self, stopped: bool = True) -> str:
        """The whole reply as received; flushes what was held back, less the stop token.

        ``stopped``: the reply ended on a stop (finish_reason "stop"), so a special token at
        its very end is the stop token; otherwise (cut off) everything is shown."""
        text = "".join(self.parts)
        _, stop = split_stop(text, stopped)
        rest = self.pending[: len(self.pending) - len(stop)] if stop else self.pending
        if rest and self.on_text is not None:
            self.on_text(rest)
        self.pending = ""
        return text


_SPECIAL_START = re.compile(r"<(\|[A-Za-z0-9_]*\|?)?")


def _held_suffix(text: str) -> int:
    """Length of the suffix of ``text`` that is a special token or the start of one."""
    start = text.rfind("<", max(0, len(text) - 48))
    if start < 0:  # the fast path: almost every delta
        return 0
    piece = text[start:]
    return len(piece) if SPECIAL_TOKEN.fullmatch(piece) or _SPECIAL_START.fullmatch(piece) else 0


def split_stop(text: str, stopped: bool = True) -> tuple[str, str | None]:
    """(text, stop token): a special token ending a stopped reply is its stop token (CWM's
    <|eot_id|>, <|eom_id|>, <|end_of_text|>, or another model's own, such as <|im_end|>)."""
    if stopped:
        for stop in STOP_TEXTS:
            if text.endswith(stop):
                return text[: -len(stop)], stop
        match = SPECIAL_TOKEN.search(text[-48:])
        if match is not None and text.endswith(match.group()):
            return text[: -len(match.group())], match.group()
    return text, None


def stop_token(found: str | None, finish_reason: str | None, stop_reason: Any) -> str | None:
    """The stop token a reply ended with, from its text, vLLM's ``stop_reason``, or its finish reason.

    ``stop_reason`` is the token id when a ``stop_token_ids`` entry stopped it, a string when
    a stop string did (no token then), and None for the model's end-of-sequence token,
    which for CWM is <|eot_id|>."""
    if finish_reason != "stop":
        return None  # cut off: the caller closes the turn with <|eot_id|>
    if found is not None:
        return found
    if isinstance(stop_reason, str):
        return None
    if isinstance(stop_reason, int):
        return STOP_TOKENS.get(stop_reason)
    return EOT


# -- HTTP clients -------------------------------------------------------------------------


def make_http(api_key: str | None, timeout: float) -> httpx.Client:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    # The read timeout bounds the silence between two streamed chunks (or before the
    # first, which includes prefill of a long prompt), not the whole reply.
    return httpx.Client(headers=headers, timeout=httpx.Timeout(timeout, connect=10.0))


# What a response yields: (text, finish_reason, stop_reason, usage).
_Answer = tuple[str, "str | None", Any, "dict | None"]


class _HTTPModel:
    """What the two HTTP clients share: the connection, retries, the request/stream loop."""

    format: Format
    _path: str

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        api_key: str | None = None,
        max_context: int | None = None,
        counter: TokenCounter | None = None,
        retries: int = 4,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        timeout: float = 600.0,
        stream: bool = True,
        temperature: float | None = TEMPERATURE,
        top_p: float | None = TOP_P,
        on_retry: OnRetry | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = model
        self.max_context = max_context
        self.counter: TokenCounter = counter if counter is not None else EstimateCounter()
        self.retry = RetryPolicy(retries=retries, base_delay=base_delay, max_delay=max_delay)
        self.stream = stream
        self.temperature = temperature
        self.top_p = top_p
        self.on_retry = on_retry
        self._owns_http = http is None
        self.http = http if http is not None else make_http(api_key, timeout)
        if http is not None and api_key:
            self.http.headers["Authorization"] = f"Bearer {api_key}"

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> _HTTPModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _sampling(self, temperature: float | None, top_p: float | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if temperature is not None:
            out["temperature"] = temperature
        if top_p is not None:
            out["top_p"] = top_p
        return out

    def _stream_fields(self) -> dict[str, Any]:
        if self.stream:
            return {"stream": True, "stream_options": {"include_usage": True}}
        return {"stream": False}

    def _post(self, payload: dict[str, Any], on_text: OnText | None) -> Completion:
        return self.retry.run(lambda: self._attempt(payload, on_text), self.on_retry)

    def _attempt(self, payload: dict[str, Any], on_text: OnText | None) -> Completion:
        url = self.base_url + self._path
        started = time.perf_counter()
        streaming = False
        try:
            with self.http.stream("POST", url, json=payload) as response:
                if response.status_code != 200:
                    response.read()
                    raise error_for_status(response)
                streaming = True
                if payload.get("stream") and response.headers.get("content-type", "").startswith("text/event-stream"):
                    result = self._read_stream(response, on_text)
                else:  # not streamed, or a server that ignored stream=true
                    response.read()
                    result = self._read_whole(response, on_text)
        except httpx.HTTPError as exc:
            raise transport_error(exc, url, streaming=streaming) from exc
        text, finish, stop_reason, usage = result
        text, found = split_stop(text, finish == "stop")
        return Completion(
            text=text,
            finish_reason=finish,
            prompt_tokens=_int(usage, "prompt_tokens"),
            completion_tokens=_int(usage, "completion_tokens"),
            seconds=time.perf_counter() - started,
            stop=stop_token(found, finish, stop_reason),
        )

    def _read_stream(self, response: httpx.Response, on_text: OnText | None) -> _Answer:
        tail = StopTail(on_text)
        finish: str | None = None
        stop_reason: Any = None
        usage: dict | None = None
        done = False
        for data in iter_sse(response.iter_lines()):
            if data == "[DONE]":
                done = True
                break
            event = _json(data)
            if "error" in event or event.get("object") == "error":
                raise _stream_error(event)
            if event.get("usage"):
                usage = event["usage"]
            choices = event.get("choices")
            if not choices:
                continue  # the usage chunk
            choice = choices[0]
            if not isinstance(choice, dict):
                raise MalformedResponse(f"a stream chunk has a malformed choice: {data[:200]}")
            tail.feed(self._delta(choice))
            if choice.get("finish_reason") is not None:
                finish, stop_reason = choice["finish_reason"], choice.get("stop_reason")
        if not done and finish is None:
            raise StreamError("the event stream ended before the reply finished (no finish_reason, no [DONE])")
        return tail.finish(finish == "stop"), finish, stop_reason, usage

    def _read_whole(self, response: httpx.Response, on_text: OnText | None) -> _Answer:
        body = _json(response.text)
        try:
            choice = body["choices"][0]
            text = self._message(choice)
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise MalformedResponse(f"no choices[0] text in the answer: {response.text[:300]}") from exc
        if not isinstance(text, str):
            raise MalformedResponse(f"choices[0] holds no text: {response.text[:300]}")
        finish = choice.get("finish_reason")
        shown, _ = split_stop(text, finish == "stop")
        if shown and on_text is not None:
            on_text(shown)
        usage = body.get("usage") if isinstance(body.get("usage"), dict) else None
        return text, finish, choice.get("stop_reason"), usage

    # The two wire formats differ only in where the text sits.
    def _delta(self, choice: dict[str, Any]) -> str:
        raise NotImplementedError

    def _message(self, choice: dict[str, Any]) -> Any:
        raise NotImplementedError


def _json(data: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise MalformedResponse(f"the server sent something that is not JSON: {data[:200]!r}") from exc
    if not isinstance(value, dict):
        raise MalformedResponse(f"the server sent JSON that is not an object: {data[:200]!r}")
    return value


def _stream_error(event: dict[str, Any]) -> ModelError:
    inner = event.get("error", event)
    message = inner.get("message", json.dumps(inner)) if isinstance(inner, dict) else str(inner)
    if any(m in message.lower() for m in _CONTEXT_MARKERS):
        return ContextLengthExceeded(message)
    code = inner.get("code") if isinstance(inner, dict) else None
    if isinstance(code, int) and 400 <= code < 500 and code not in (408, 429):
        # vLLM validates some requests only once streaming has begun: still the client's error.
        return RequestRejected(f"the server rejected the request (code {code}): {message}", status=code)
    return StreamError(f"the server reported an error mid-stream: {message}")


def _int(usage: dict | None, key: str) -> int | None:
    value = usage.get(key) if usage else None
    return value if isinstance(value, int) else None


class CWMClient(_HTTPModel):
    """CWM over vLLM's ``/v1/completions``: the transcript goes as raw text, byte for byte."""

    format: Format = "cwm"
    _path = "/completions"

    # The ids that end a turn: CWM's; a server running another model (the CPU test tier) sets its own.
    stop_token_ids: tuple[int, ...] = STOP_TOKEN_IDS

    def complete(self, transcript: Transcript, *, max_tokens: int, on_text: OnText | None = None) -> Completion:
        """The next turn, sampled with the configured temperature and top_p; the reply's stop token
        comes back as ``Completion.stop`` (the transcript keeps it, as CWM's did)."""
        return self.complete_text(transcript.prompt, max_tokens=max_tokens, temperature=self.temperature,
                                  top_p=self.top_p, stop_token_ids=self.stop_token_ids, keep_stop_token=True,
                                  on_text=on_text)

    def complete_text(
        self,
        prompt: str,
        *,
        max_tokens: int,
        temperature: float | None = TEMPERATURE,
        top_p: float | None = TOP_P,
        stop: list[str] | None = None,
        stop_token_ids: Iterable[int] = STOP_TOKEN_IDS,
        keep_stop_token: bool = False,
        on_text: OnText | None = None,
    ) -> Completion:
        """Complete any text prompt (also used for execution traces and imagined outputs).

        ``keep_stop_token``: ask vLLM to keep the stop token's text in the reply, so the
        token the model generated is known (``Completion.stop``) even when it is not the
        end-of-sequence token."""
        payload: dict[str, Any] = {
            "model": self.name,
            "prompt": prompt,
            "max_tokens": max_tokens,
            **self._sampling(temperature, top_p),
            "stop_token_ids": list(stop_token_ids),
            # The prompt already starts with <|begin_of_text|>; vLLM would add a second one.
            "add_special_tokens": False,
            # Keep <|eot_id|> and friends in the text: CWM's format is made of them.
            "skip_special_tokens": False,
            **self._stream_fields(),
        }
        if stop:
            payload["stop"] = list(stop)
        if keep_stop_token:
            payload["include_stop_str_in_output"] = True
        return self._post(payload, on_text)

    def _delta(self, choice: dict[str, Any]) -> str:
        text = choice.get("text")
        if text is None:
            return ""
        if not isinstance(text, str):
            raise MalformedResponse(f"a stream chunk's text is not a string: {choice!r}"[:300])
        return text

    def _message(self, choice: dict[str, Any]) -> Any:
        return choice["text"]


# A tool result goes to a chat model as a user message with this header. Chat APIs
# accept role "tool" only as the answer to a structured tool call (it needs a
# tool_call_id that our text protocol never creates), and most chat templates
# reject or drop a tool message without one; a user turn is accepted everywhere,
# keeps user/assistant alternation, and the header still says which tool spoke.
TOOL_RESULT_HEADER = "[{role} result]\n"


def chat_messages(transcript: Transcript) -> list[dict[str, str]]:
    """The transcript as OpenAI chat messages (see TOOL_RESULT_HEADER for tool results)."""
    out: list[dict[str, str]] = []
    for role, body in transcript.messages:
        if role.startswith("tool: "):
            out.append({"role": "user", "content": TOOL_RESULT_HEADER.format(role=role) + body})
        else:
            out.append({"role": role, "content": body})
    return out


class ChatClient(_HTTPModel):
    """Any OpenAI-compatible ``/chat/completions`` endpoint, with CWM's text tool protocol inside messages."""

    format: Format = "chat"
    _path = "/chat/completions"

    def complete(self, transcript: Transcript, *, max_tokens: int, on_text: OnText | None = None) -> Completion:
        payload: dict[str, Any] = {
            "model": self.name,
            "messages": chat_messages(transcript),
            "max_tokens": max_tokens,
            **self._sampling(self.temperature, self.top_p),
            **self._stream_fields(),
        }
        return self._post(payload, on_text)

    def _delta(self, choice: dict[str, Any]) -> str:
        delta = choice.get("delta") or {}
        content = delta.get("content") if isinstance(delta, dict) else None
        if content is not None and not isinstance(content, str):
            raise MalformedResponse(f"a stream chunk's delta content is not a string: {choice!r}"[:300])
        return content or ""

    def _message(self, choice: dict[str, Any]) -> Any:
        return choice["message"].get("content") or ""
