"""The flags `cwm-agent serve` picks for each machine (pure: no GPU, no vLLM)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cwm_agent.models import serve
from cwm_agent.models.serve import GPU, ServeError, parse_nvidia_smi, plan, vllm_command

H100 = GPU("NVIDIA H100 80GB HBM3", 81559 / 1024)
A100_80 = GPU("NVIDIA A100-SXM4-80GB", 81920 / 1024)
H200 = GPU("NVIDIA H200", 143771 / 1024)
L40S = GPU("NVIDIA L40S", 46068 / 1024)
A100_40 = GPU("NVIDIA A100-SXM4-40GB", 40960 / 1024)


def flag(argv: list[str], name: str) -> str | None:
    """The value after `name`, or None when the flag is absent."""
    return argv[argv.index(name) + 1] if name in argv else None


def test_one_80gb_gpu_serves_cwm_in_fp8_at_full_context():
    argv = vllm_command("facebook/cwm", gpus=[H100])
    assert flag(argv, "--quantization") == "fp8"
    assert flag(argv, "--kv-cache-dtype") == "fp8"
    assert flag(argv, "--max-model-len") == "131072"
    assert "--tensor-parallel-size" not in argv
    assert flag(argv, "--model") == "facebook/cwm"
    assert flag(argv, "--served-model-name") == "facebook/cwm"  # "cwm" in the id: the client picks CWM format


def test_one_80gb_gpu_keeps_bf16_with_a_shorter_max_length():
    argv = vllm_command("facebook/cwm", gpus=[A100_80], max_model_len=32768)
    assert "--quantization" not in argv and "--kv-cache-dtype" not in argv
    assert flag(argv, "--dtype") == "bfloat16"
    assert flag(argv, "--max-model-len") == "32768"


def test_one_80gb_gpu_falls_back_to_fp8_when_the_asked_length_does_not_fit_bf16():
    argv = vllm_command("facebook/cwm", gpus=[H100], max_model_len=65536)
    assert flag(argv, "--quantization") == "fp8"
    assert flag(argv, "--max-model-len") == "65536"


def test_one_h200_serves_bf16_at_full_context():
    argv = vllm_command("facebook/cwm", gpus=[H200])
    assert flag(argv, "--dtype") == "bfloat16"
    assert "--quantization" not in argv
    assert flag(argv, "--max-model-len") == "131072"
    assert "--tensor-parallel-size" not in argv


@pytest.mark.parametrize(("count", "tp"), [(2, "2"), (3, "2"), (4, "4"), (8, "8"), (16, "8")])
def test_several_gpus_use_tensor_parallel_in_bf16(count, tp):
    argv = vllm_command("facebook/cwm", gpus=[H100] * count)
    assert flag(argv, "--tensor-parallel-size") == tp
    assert flag(argv, "--dtype") == "bfloat16"
    assert "--quantization" not in argv
    assert flag(argv, "--max-model-len") == "131072"


def test_explicit_tensor_parallel_is_kept_and_checked():
    argv = vllm_command("facebook/cwm", gpus=[H100] * 4, tensor_parallel=2)
    assert flag(argv, "--tensor-parallel-size") == "2"
    with pytest.raises(ServeError, match="needs that many GPUs"):
        vllm_command("facebook/cwm", gpus=[H100] * 2, tensor_parallel=4)


def test_a_48gb_gpu_gets_fp8_at_a_shorter_context():
    p = plan("facebook/cwm", gpus=[L40S])
    assert flag(p.argv, "--quantization") == "fp8"
    assert p.max_model_len is not None and p.max_model_len < 131072
    assert flag(p.argv, "--max-model-len") == str(p.max_model_len)


def test_a_gpu_too_small_for_cwm_is_refused_with_advice():
    with pytest.raises(ServeError, match="does not fit") as info:
        vllm_command("facebook/cwm", gpus=[A100_40])
    assert "tensor parallel" in str(info.value)
    # ... while four of them carry it in bf16.
    argv = vllm_command("facebook/cwm", gpus=[A100_40] * 4)
    assert flag(argv, "--tensor-parallel-size") == "4"
    assert flag(argv, "--dtype") == "bfloat16"


def test_an_asked_length_that_fits_nowhere_is_refused():
    with pytest.raises(ServeError, match="shorter --max-model-len"):
        vllm_command("facebook/cwm", gpus=[L40S], max_model_len=131072)


def test_mixed_gpus_plan_for_the_smallest():
    argv = vllm_command("facebook/cwm", gpus=[H200, H100])
    assert flag(argv, "--tensor-parallel-size") == "2"
    assert flag(argv, "--dtype") == "bfloat16"


def test_no_gpu_serves_the_embedded_model_on_vllm_cpu(tmp_path):
    p = plan(None, gpus=[], port=8123, model_dir=tmp_path / "smol")
    cmd = p.command()
    assert cmd[0] == "env" and "VLLM_CPU_KVCACHE_SPACE=2" in cmd
    assert p.env == {"VLLM_CPU_KVCACHE_SPACE": "2"}
    assert p.cpu
    # The console script of vllm-cpu fails: the module is run instead.
    assert p.argv[0] == str(serve.vllm_cpu_venv() / "bin" / "python")
    assert p.argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert flag(p.argv, "--model") == str(tmp_path / "smol")
    assert flag(p.argv, "--served-model-name") == "smollm2-135m-instruct"
    assert flag(p.argv, "--gpu-memory-utilization") == "0.5"
    assert flag(p.argv, "--dtype") in ("float32", "bfloat16")
    assert flag(p.argv, "--max-model-len") == "8192"
    assert flag(p.argv, "--port") == "8123"
    assert p.base_url == "http://127.0.0.1:8123/v1"


def test_cpu_dtype_follows_the_cpu_flags():
    assert serve.cpu_dtype("processor : 0\nflags : fpu avx2 avx512f avx512_bf16\n") == "bfloat16"
    assert serve.cpu_dtype("processor : 0\nflags : fpu amx_bf16 amx_tile\n") == "bfloat16"
    assert serve.cpu_dtype("processor : 0\nflags : fpu sse4_2 avx2\n") == "float32"
    assert serve.cpu_dtype("") == "float32"
    assert flag(plan(None, gpus=[], dtype="float32").argv, "--dtype") == "float32"


def test_cpu_plan_takes_a_given_python_and_length():
    p = plan("embedded", gpus=[], python="/opt/v/bin/python", max_model_len=2048)
    assert p.argv[0] == "/opt/v/bin/python"
    assert flag(p.argv, "--max-model-len") == "2048"


def test_cwm_without_a_gpu_is_refused_with_the_way_out():
    with pytest.raises(ServeError, match="without --model"):
        vllm_command("facebook/cwm", gpus=[])
    with pytest.raises(ServeError, match="needs GPUs"):
        vllm_command(None, gpus=[], tensor_parallel=2)


def test_binds_loopback_by_default_and_the_host_when_asked():
    assert flag(vllm_command("facebook/cwm", gpus=[H200]), "--host") == "127.0.0.1"
    p = plan("facebook/cwm", gpus=[H200], host="0.0.0.0", port=9000)
    assert flag(p.argv, "--host") == "0.0.0.0"
    assert p.base_url == "http://127.0.0.1:9000/v1"  # the address a local client dials


def test_gpu_plan_runs_this_python_unless_told():
    argv = vllm_command("facebook/cwm", gpus=[H200])
    assert argv[0] == sys.executable
    assert vllm_command("facebook/cwm", gpus=[H200], python="/x/python")[0] == "/x/python"


def test_other_models_get_no_cwm_memory_plan():
    argv = vllm_command("Qwen/Qwen2.5-Coder-7B-Instruct", gpus=[H100, H100])
    assert "--quantization" not in argv and "--dtype" not in argv and "--max-model-len" not in argv
    assert flag(argv, "--tensor-parallel-size") == "2"


def test_default_model_with_a_gpu_is_cwm():
    assert flag(vllm_command(None, gpus=[H200]), "--model") == "facebook/cwm"


def test_memory_model_matches_the_published_serving_facts():
    # bf16 weights alone are about 61 GiB: they fit an 80 GB card, their full-context cache does not.
    assert serve.cwm_fits(H100.memory_gib, 1, weights="fp8", max_len=131072)
    assert not serve.cwm_fits(H100.memory_gib, 1, weights="bf16", max_len=131072)
    assert serve.cwm_fits(H200.memory_gib, 1, weights="bf16", max_len=131072)
    assert serve.cwm_fits(H100.memory_gib, 2, weights="bf16", max_len=131072)
    # Sliding-window layers cap their cache at the window: doubling a long length
    # adds only the full-attention layers' share.
    grow = serve.kv_cache_gib(131072, kv_bytes=2) - serve.kv_cache_gib(65536, kv_bytes=2)
    assert grow == pytest.approx(16 * 65536 * 2 * 8 * 128 * 2 / 2**30)


def test_parse_nvidia_smi_reads_names_and_memory():
    text = "0, NVIDIA H100 80GB HBM3, 81559\n1, NVIDIA H100 80GB HBM3, 81559\n"
    gpus = parse_nvidia_smi(text)
    assert gpus == [GPU("NVIDIA H100 80GB HBM3", 81559 / 1024)] * 2
    assert parse_nvidia_smi("") == []
    assert parse_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate with the driver") == []


def test_parse_nvidia_smi_honours_cuda_visible_devices():
    text = "0, NVIDIA H200, 143771\n1, NVIDIA H100 80GB HBM3, 81559\n"
    assert [g.name for g in parse_nvidia_smi(text, "1")] == ["NVIDIA H100 80GB HBM3"]
    assert parse_nvidia_smi(text, "") == []
    assert len(parse_nvidia_smi(text, "GPU-1234abcd")) == 2  # UUIDs: left to vLLM


def test_detect_gpus_is_empty_without_nvidia_smi(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no nvidia-smi
    assert serve.detect_gpus() == []


def test_detect_gpus_reads_a_real_nvidia_smi_program(monkeypatch, tmp_path):
    # A real executable answering like nvidia-smi: what detect_gpus parses is its output.
    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\necho '0, NVIDIA H200, 143771'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    gpus = serve.detect_gpus()
    assert gpus == [GPU("NVIDIA H200", 143771 / 1024)]
    assert flag(vllm_command(None, gpus=gpus), "--dtype") == "bfloat16"


def test_start_refuses_a_port_in_use(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        p = plan(None, gpus=[], port=port, python=sys.executable)
        with pytest.raises(ServeError, match="already in use"):
            serve.start(p, log_path=tmp_path / "log")


def test_start_reports_a_server_that_dies_with_its_log(tmp_path):
    script = "import sys; print('boom: no vllm here'); sys.exit(3)"
    p = serve.ServePlan([sys.executable, "-c", script], {}, "x", "127.0.0.1", serve.free_port(), None)
    with pytest.raises(ServeError, match="exited with status 3") as info:
        serve.start(p, log_path=tmp_path / "vllm.log", poll_interval=0.1)
    assert "boom: no vllm here" in str(info.value)


def test_start_times_out_stops_the_server_and_shows_the_log(tmp_path):
    port = serve.free_port()
    script = "import time; print('loading forever', flush=True); time.sleep(600)"
    p = serve.ServePlan([sys.executable, "-c", script], {}, "x", "127.0.0.1", port, None)
    seen: list[float] = []
    with pytest.raises(ServeError, match="did not answer") as info:
        serve.start(p, log_path=tmp_path / "vllm.log", timeout=1.0, poll_interval=0.1,
                    on_progress=lambda s, line: seen.append(s))
    assert "loading forever" in str(info.value)
    assert seen  # progress was reported while waiting
    # The stopped server's log names the command it ran.
    assert Path(tmp_path / "vllm.log").read_text().startswith("$ ")


def test_start_returns_when_health_answers_and_stop_ends_the_group(tmp_path):
    # A real HTTP server that answers /health after a moment, standing in for vLLM's
    # start-up; its child process shows that stop() ends the whole group.
    port = serve.free_port()
    script = f"""
import http.server, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
print("CHILD-PID", child.pid, flush=True)
time.sleep(0.5)
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
http.server.HTTPServer(("127.0.0.1", {port}), H).serve_forever()
"""
    p = serve.ServePlan([sys.executable, "-c", script], {"CWM_TEST_MARK": "1"}, "x", "127.0.0.1", port, None)
    handle = serve.start(p, log_path=tmp_path / "vllm.log", timeout=30, poll_interval=0.1)
    try:
        assert handle.running()
        assert handle.base_url == f"http://127.0.0.1:{port}/v1"
        child = int(next(line.split()[1] for line in (tmp_path / "vllm.log").read_text().splitlines()
                         if line.startswith("CHILD-PID ")))
        assert Path(f"/proc/{child}").exists()
    finally:
        handle.stop(timeout=5)
    assert not handle.running()
    # The grandchild got the signal too: it is gone (or a zombie, when nothing reaps it)
    # once the kernel has run its exit, which on a loaded machine takes a moment.
    assert _ends(child, within=10.0)


def _ends(pid: int, *, within: float) -> bool:
    status = Path(f"/proc/{pid}/status")
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if "zombie" in status.read_text():
                return True
        except OSError:  # no such process
            return True
        time.sleep(0.05)
    return False


def test_serve_main_dry_run_prints_the_plan_and_command(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi: the CPU plan
    lines: list[str] = []
    assert serve.serve_main(dry_run=True, port=8123, out=lines.append) == 0
    command = lines[-1]
    assert command.startswith("env VLLM_CPU_KVCACHE_SPACE=2 ")
    assert "-m vllm.entrypoints.openai.api_server" in command and "--port 8123" in command
    assert any("no GPU" in line for line in lines[:-1])


def test_an_impossible_plan_is_one_line_and_exit_2(tmp_path):
    # Through the real console script: no nvidia-smi on PATH, so CWM cannot be served here.
    env = {**os.environ, "PATH": str(tmp_path)}
    done = subprocess.run([sys.executable, "-m", "cwm_agent.cli", "serve", "facebook/cwm", "--dry-run"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and "needs GPUs" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_interrupt_while_waiting_stops_the_server(tmp_path):
    # Ctrl-C during the minutes of start-up must not leave vLLM running.
    script = "import os, time; print('PID', os.getpid(), flush=True); time.sleep(600)"
    p = serve.ServePlan([sys.executable, "-c", script], {}, "x", "127.0.0.1", serve.free_port(), None)
    log = tmp_path / "vllm.log"

    def interrupt(seconds: float, line: str) -> None:
        if line.startswith("PID "):  # the server is up and has said who it is
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        serve.start(p, log_path=log, poll_interval=0.05, on_progress=interrupt)
    pid = int(next(line.split()[1] for line in log.read_text().splitlines() if line.startswith("PID ")))
    assert _ends(pid, within=10.0)
