"""/tokenize requests per turn (issue 11, item 4): a scripted CWM episode in a real Docker sandbox.

Every observation costs one count (CWM's one-count budget estimate); the transcript's running
count is settled from the prompt_tokens the server reports, not recounted. The baseline in the
same run is the number of turns: the ratio is requests per turn (the fixed-point budget of
before cost 3.10 per turn on the same episode).

    .venv/bin/python benchmarks/bench_tokenize_per_turn.py [--turns 30]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from cwm_agent import protocol
from cwm_agent.agent import Agent, Limits
from cwm_agent.bench.tasks import DEMO_TASK, load_tasks
from cwm_agent.models.connect import connect
from cwm_agent.paths import TASKS_DIR
from cwm_agent.sandbox.docker import DockerSandbox
from cwm_agent.testing.scripted_server import ScriptedServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--turns", type=int, default=30)
    turns = parser.parse_args().turns
    # Outputs of random length, so budget numbers change width now and then.
    reply = "Look.\n</think>\n" + protocol.render_action(protocol.Action("bash", "seq 1 $((RANDOM % 300))"))
    task = load_tasks(TASKS_DIR / DEMO_TASK)[0]
    with tempfile.TemporaryDirectory() as tmp, ScriptedServer([reply] * (turns + 5), model_id="facebook/cwm") as server:
        repo = Path(tmp) / "repo"
        task.checkout(repo)
        model = connect(base_url=server.base_url)
        with DockerSandbox(repo=repo, run_id="bench-tokenize") as sandbox:
            before = sum(1 for path, _ in server.requests if path == "/tokenize")
            result = Agent(model, sandbox, limits=Limits(max_turns=turns)).run(task.problem_statement)
        requests = sum(1 for path, _ in server.requests if path == "/tokenize") - before
        generations = len(server.generation_requests())
    print(f"{result.exit.value}: {generations} turns, {requests} /tokenize requests = "
          f"{requests / generations:.2f} per turn")


if __name__ == "__main__":
    main()
