"""Which model to talk to: the embedded CPU model, or what a server at --base-url serves.

``connect`` asks the server's ``/models`` for the model, its context window and its name, picks
CWM's text format or the chat format, and an exact token counter when the server has one.
"""

from __future__ import annotations

from typing import Any

import httpx

from cwm_agent.models.client import (
    ChatClient,
    CWMClient,
    Format,
    MalformedResponse,
    Model,
    OnRetry,
    RequestRejected,
    make_http,
    transport_error,
    error_for_status,
)
from cwm_agent.models.tokens import EstimateCounter, HTTPTokenizeCounter, TokenCounter, server_root
from cwm_agent.protocol import TEMPERATURE, TOP_P


# -- connect ------------------------------------------------------------------------------


def connect(
    *,
    base_url: str | None,
    model: str | None = None,
    api_key: str | None = None,
    format: str | None = None,  # noqa: A002 - the CLI's name for it
    retries: int = 4,
    base_delay: float = 1.0,
    max_delay: float = 30.0,
    timeout: float = 600.0,
    temperature: float | None = TEMPERATURE,
    top_p: float | None = TOP_P,
    on_retry: OnRetry | None = None,
) -> Model:
    """The model to talk to: the embedded CPU model when ``base_url`` is None, else the server's.

    Asks ``GET {base_url}/models`` for the model (``model`` or the first served), its
    context window (vLLM's ``max_model_len``) and picks the format: "cwm" when the id
    contains "cwm" (any case), else "chat", unless ``format`` says otherwise. Token
    counts come from the server's ``/tokenize`` when it has one (vLLM), else an estimate.
    """
    if format not in (None, "cwm", "chat"):
        raise ValueError(f"format must be 'cwm' or 'chat', not {format!r}")
    if base_url is None:
        if format == "cwm":
            raise ValueError("the embedded model speaks chat format only; pass --base-url for a CWM server")
        from cwm_agent.models.local import LocalModel

        return LocalModel()
    http = make_http(api_key, timeout)
    try:
        base, entry = _find_model(http, base_url.rstrip("/"), model)
        name = str(entry["id"])
        fmt: Format = format or ("cwm" if "cwm" in name.lower() else "chat")  # type: ignore[assignment]
        max_len = entry.get("max_model_len")
        counter = _counter(http, base, name)
    except BaseException:
        http.close()
        raise
    cls = CWMClient if fmt == "cwm" else ChatClient
    client = cls(
        base,
        model=name,
        max_context=max_len if isinstance(max_len, int) else None,
        counter=counter,
        retries=retries,
        base_delay=base_delay,
        max_delay=max_delay,
        temperature=temperature,
        top_p=top_p,
        on_retry=on_retry,
        http=http,
    )
    client._owns_http = True  # made here, so closed with the client
    return client


def _find_model(http: httpx.Client, base: str, model: str | None) -> tuple[str, dict[str, Any]]:
    url = f"{base}/models"
    response = _get(http, url)
    if response.status_code == 404 and not base.endswith("/v1"):
        # A base URL without /v1 is the most common slip; vLLM serves everything under it.
        retry = _get(http, f"{base}/v1/models")
        if retry.status_code == 200:
            base, url, response = f"{base}/v1", f"{base}/v1/models", retry
    if response.status_code != 200:
        raise error_for_status(response)
    try:
        models = [m for m in response.json()["data"] if isinstance(m, dict) and "id" in m]
    except (ValueError, KeyError, TypeError) as exc:
        raise MalformedResponse(f"{url} did not answer an OpenAI model list: {response.text[:300]}") from exc
    if not models:
        raise MalformedResponse(f"{url} lists no models; is the server still loading one?")
    if model is None:
        return base, models[0]
    for entry in models:
        if entry["id"] == model:
            return base, entry
    served = ", ".join(str(m["id"]) for m in models)
    raise RequestRejected(f"{base} does not serve model {model!r}; it serves: {served} (fix --model)")


def _get(http: httpx.Client, url: str) -> httpx.Response:
    try:
        return http.get(url)
    except httpx.HTTPError as exc:
        raise transport_error(exc, url, streaming=False) from exc


def _counter(http: httpx.Client, base: str, name: str) -> TokenCounter:
    """vLLM's exact /tokenize when the server has it, else the estimate."""
    try:
        probe = http.post(
            f"{server_root(base)}/tokenize", json={"model": name, "prompt": "a", "add_special_tokens": False}
        )
        if probe.status_code == 200 and isinstance(probe.json().get("count"), int):
            return HTTPTokenizeCounter(base, http, model=name)
    except (httpx.HTTPError, ValueError, AttributeError):
        pass
    return EstimateCounter()
