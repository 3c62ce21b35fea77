"""A real local Ray cluster for tests: a head and nodes-1 more nodes, each its own `ray start --block`.

Each node runs in a session of its own (start_new_session=True), so all of its processes are
known: `ray start` itself, its raylet and agents, the workers the raylet starts, and on the head
gcs_server, monitor, client server and API server. Workers get a process group of their own
(pgid = their pid), so killing the group of `ray start` would miss them; they keep its session,
so kill_node() SIGKILLs every process of that session at once, as a crashed machine would. The
head then marks the node dead (`ray.nodes()` Alive False) after 3 failed health checks a second
apart (~3 s; Ray's defaults, 5 checks 3 s apart, took ~14 s). Each node announces `docker` slots
(one by default), so tests place work with resources={"docker": 1}: one slot per node.

Temp dirs: Ray 2.60 honours --temp-dir per node, head and workers alike, so every node has its
own (<root>/head, <root>/node1, ...), logs included. Ray puts AF_UNIX sockets under
<temp-dir>/session_<date>_<time>_<usec>_<pid>/sockets/ and refuses paths over 107 bytes, so when
tmp_path is too long (pytest's often is) the dirs live in a short /tmp/ray-XXXX, linked from
tmp_path/"ray", which stop() moves into tmp_path. Ports: every port Ray would take at a fixed
default (GCS 6379, client server 10001, API server 8265, dashboard agent 52365) is a free port
picked here, so clusters, and nodes of one cluster, never collide; Ray picks the rest at random.
stop() SIGKILLs these sessions and nothing else: never a bare `ray stop`, which kills every Ray on the
machine. Usage stats are off and no dashboard UI runs; nothing leaves this machine (Ray does bind
the machine's own interface address rather than 127.0.0.1). Probes run a driver in a subprocess,
never ray.init in the test process, which may have its own.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
_LONGEST_SOCKET = "session_2000-01-01_00-00-00_000000_4194304/sockets/plasma_store"
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0",  # a health check still has 10 s to answer
       "RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3"}
# A driver that waits until the alive nodes are exactly `names` with `docker` slots in all.
_PROBE = """
import json, sys, time, ray
address, names, docker = sys.argv[1], set(json.loads(sys.argv[2])), float(sys.argv[3])
deadline = time.time() + float(sys.argv[4])
ray.init(address=address, logging_level="ERROR", log_to_driver=False)
while True:
    alive = {n["NodeName"]: n for n in ray.nodes() if n["Alive"]}
    ok = set(alive) == names and sum(n["Resources"].get("docker", 0) for n in alive.values()) == docker
    if ok or time.time() > deadline:
        print("PROBE", json.dumps({k: n["NodeID"] for k, n in alive.items()}), flush=True)
        sys.exit(0 if ok else 1)
    time.sleep(0.2)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


class RayCluster:
    def __init__(self, tmp_path: Path, *, nodes: int = 2, docker: int = 1, cpus: int = 1):
        self.tmp_path, self.nodes, self.docker, self.cpus = tmp_path, nodes, docker, cpus
        self.node_ids: dict[int, str] = {}  # index (0 the head) -> Ray node id hex; kept after a kill
        self.startup_seconds = 0.0  # first `ray start` to every node alive with its slots
        self.procs: dict[int, subprocess.Popen[bytes]] = {}  # index -> `ray start`, session leader
        self.killed: set[int] = set()
        self.root = tmp_path / "ray"
        self._dirs = self.root  # where the temp dirs really are
        self._gone: set[int] = set()  # nodes whose session is over: their pid may be reused
        self._address: str | None = None

    @property
    def address(self) -> str:
        """The GCS address, ip:port, for ray.init(address=...) or a CLI --address."""
        if self._address is None:
            raise RuntimeError("the cluster is not started")
        return self._address

    def _start(self, index: int, *extra: str) -> None:
        name = "head" if index == 0 else f"node{index}"
        args = [str(BIN / "ray"), "start", "--block", "--node-name", name, "--num-cpus", str(self.cpus),
                "--resources", json.dumps({"docker": self.docker}), "--temp-dir", str(self._dirs / name),
                "--object-store-memory", "100000000", "--disable-usage-stats",
                "--dashboard-agent-listen-port", str(_free_port()), *extra]
        with open(self.tmp_path / f"ray-{name}.log", "ab") as log:  # what `ray start` itself says
            self.procs[index] = subprocess.Popen(args, env=ENV, stdin=subprocess.DEVNULL, stdout=log,
                                                 stderr=subprocess.STDOUT, start_new_session=True)

    def start(self) -> RayCluster:
        began = time.monotonic()
        self.tmp_path.mkdir(parents=True, exist_ok=True)
        try:
            if len(str(self.root / "node99" / _LONGEST_SOCKET)) > 107:
                self._dirs = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
                self.root.symlink_to(self._dirs)
            self._start(0, "--head", "--port", str(_free_port()), "--include-dashboard", "false",
                        "--dashboard-port", str(_free_port()), "--ray-client-server-port", str(_free_port()))
            marker = self._dirs / "head" / "ray_current_cluster"  # written once the head is up
            while not marker.exists():
                if self.procs[0].poll() is not None or time.monotonic() - began > 90:
                    raise RuntimeError(f"ray head did not start; see {self.tmp_path / 'ray-head.log'}")
                time.sleep(0.1)
            self._address = marker.read_text().strip()
            for index in range(1, self.nodes):
                self._start(index, "--address", self._address)
            self.wait_ready(120)
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def wait_ready(self, timeout: float = 60) -> dict[int, str]:
        """Wait until the alive nodes are exactly those not killed, with all their `docker` slots."""
        live = [i for i in range(self.nodes) if i not in self.killed]
        names = ["head" if i == 0 else f"node{i}" for i in live]
        done = subprocess.run([sys.executable, "-c", _PROBE, self.address, json.dumps(names),
                               str(self.docker * len(live)), str(timeout)],
                              env=ENV, capture_output=True, text=True, timeout=timeout + 60)
        if done.returncode != 0:
            said = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            raise TimeoutError(f"ray cluster not ready in {timeout}s:\n{said}")
        # Ray's own messages to the driver (a node marked dead, ...) come on stdout too
        seen = json.loads([line for line in done.stdout.splitlines() if line.startswith("PROBE ")][-1][6:])
        self.node_ids.update({i: seen[name] for i, name in zip(live, names)})
        return self.node_ids

    def kill_node(self, index: int) -> None:
        """SIGKILL every process of non-head node `index` (1..nodes-1) at once, as a crash would."""
        if not 1 <= index < self.nodes:
            raise ValueError(f"no non-head node {index}")
        self.killed.add(index)
        self._signal(signal.SIGKILL, 10, [index])

    def stop(self) -> None:
        """Stop what this cluster started, and only that. Safe to repeat and after kill_node."""
        # SIGKILL, not SIGTERM: on SIGTERM the head drains for 10-30 s; nothing needs a clean stop
        self._signal(signal.SIGKILL, 10, sorted(self.procs))
        deadline = time.monotonic() + 5  # for PID 1 to reap the zombies that `pgrep raylet` still lists
        while any(_session(p.pid, zombies=True) for p in self.procs.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        if self._dirs != self.root and self.root.is_symlink():
            self.root.unlink()
            shutil.move(str(self._dirs), str(self.root))

    def _signal(self, sig: signal.Signals, seconds: float, indexes: list[int]) -> None:
        """Send `sig` to every process of these nodes' sessions; wait up to `seconds` for them to end."""
        for index in set(indexes) - self._gone:
            for pid in _session(self.procs[index].pid):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + seconds
        for index in set(indexes) - self._gone:
            leader = self.procs[index]
            while _session(leader.pid) and time.monotonic() < deadline:
                leader.poll()  # reaps `ray start`, our child; PID 1 reaps its orphans in its own time
                time.sleep(0.1)
            if not _session(leader.pid):
                leader.wait()
                self._gone.add(index)

    def __enter__(self) -> RayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _session(sid: int, zombies: bool = False) -> list[int]:
    """The processes of session `sid`: the live ones, and the zombies too if `zombies`."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # not a process, or gone
        if int(fields[3]) == sid and (zombies or fields[0] not in "ZX"):
            pids.append(int(entry.name))
    return pids
