"""What every rollout cost: the rows' `cost` record, played in-process through the real episode service,
tool-calling agent, environment runtime and sandbox, with the scripted policy; its sums in `metrics.json`,
`gym-ray metrics` and the report; and a run written before the column still reads and reports."""

from __future__ import annotations

import asyncio
import json
import time

import pyarrow.parquet as pq
import pytest

from gym_ray.agents.base import InfraError
from gym_ray.cli import main
from gym_ray.collect.cost import format_cost_table
from gym_ray.collect.metrics import metrics_from_dir
from gym_ray.config import EnvConfig, ModelConfig
from gym_ray.episodes import EpisodeService, Group
from gym_ray.episodes.service import EnvSpec
from gym_ray.models.client import make_policy_client
from gym_ray.report.cost import cost_section
from gym_ray.resources import ResourceServer, tool
from gym_ray.resources.local import LocalEnvClient
from gym_ray.rundir import read_run
from gym_ray.types import Message, RolloutCost, Task, rollouts_to_arrow

BURN_MS, PAUSE_MS = 150, 300
# Stage walls are timed around each call; what is left of the episode's wall is the agent's own work
# (tokenizing, parsing): a few ms of CPU here, against the tool's 150. Allowed: 100 ms or 10 %, whichever is more.
TOLERANCE_S, TOLERANCE_SHARE = 0.1, 0.10


class Burner(ResourceServer):
    """`burn` spends CPU in a hook thread, `pause` waits without CPU; verify runs a program in the sandbox
    when the task asks (`sandbox: true`)."""

    def __init__(self):
        self._sandbox = None

    @tool
    def burn(self, ms: int) -> str:
        """Spend `ms` milliseconds of CPU."""
        end = time.thread_time() + ms / 1000
        while time.thread_time() < end:
            pass
        return "burnt"

    @tool
    async def pause(self, ms: int) -> str:
        """Wait `ms` milliseconds."""
        await asyncio.sleep(ms / 1000)
        return "paused"

    async def verify(self, task, messages):
        if task.verifier_metadata.get("sandbox"):
            from gym_ray.sandbox import Sandbox

            self._sandbox = self._sandbox or Sandbox(max_concurrency=1)
            result = await self._sandbox.run_python("print(sum(i * i for i in range(200_000)))")
            return float(result.ok)
        return 1.0


SCRIPT = [{"name": "burn", "arguments": {"ms": BURN_MS}}, {"name": "pause", "arguments": {"ms": PAUSE_MS}},
          "Done."]


@pytest.fixture(scope="module")
def policy():
    return make_policy_client(ModelConfig(kind="scripted", hosting="local", replies=SCRIPT,
                                          chat_template="chatml_tools"), app_name="policy")


@pytest.fixture(scope="module")
def service(policy):
    spec = EnvSpec(config=EnvConfig(server="test_cost:Burner", hosting="local"),
                   client=LocalEnvClient.of(Burner(), "burner"))
    service = EpisodeService({"burner": spec}, policy, chat_template="chatml_tools")
    asyncio.run(service.run(_task(), 0))  # warm: the chat template's first render compiles it
    return service


def _task(i: int = 0, **meta) -> Task:
    return Task(task_id=f"t{i}", env="burner", prompt=[Message(role="user", content="Burn, then pause.")],
                verifier_metadata=meta)


class FlakyPolicy:
    """The scripted policy, whose first call fails as a lost replica would."""

    def __init__(self, inner):
        self.inner, self.failed = inner, False
        self.model_name = inner.model_name

    def tokenizer_path(self) -> str:
        return self.inner.tokenizer_path()

    async def generate(self, prompt_token_ids, sampling, session_id=None):
        if not self.failed:
            self.failed = True
            raise InfraError("replica lost")
        return await self.inner.generate(prompt_token_ids, sampling, session_id)


def test_stage_walls_add_up_to_the_episode_and_a_burning_tool_shows_its_cpu(service):
    [row] = asyncio.run(service.run(_task(), 0, Group("g")))
    c = row.cost
    assert (row.status, row.reward, row.num_tool_calls) == ("ok", 1.0, 2)
    stages = c.policy_wall_s + c.tool_wall_s + c.verify_wall_s + c.env_wall_s
    assert stages <= c.wall_s
    assert c.wall_s - stages <= max(TOLERANCE_S, TOLERANCE_SHARE * c.wall_s), c
    assert c.tool_wall_s >= (BURN_MS + PAUSE_MS) / 1000
    # the burn ran in the environment's hook thread: its CPU is the tool stage's; the pause spent none
    assert BURN_MS / 1000 * 0.9 <= c.tool_cpu_s < (BURN_MS + PAUSE_MS) / 1000
    assert c.cpu_s == pytest.approx(c.policy_cpu_s + c.tool_cpu_s + c.verify_cpu_s + c.env_cpu_s + c.agent_cpu_s
                                    + c.sandbox_cpu_s)
    assert c.policy_cpu_s > 0 and c.sandbox_runs == 0 and c.retries == 0
    # tokens: every call's prompt is sent whole; what came back is the generated spans
    assert c.tokens_out == sum(row.response_loss_mask)
    assert c.tokens_in >= 3 * len(row.prompt_token_ids)
    assert c.tokens_in < 3 * (len(row.prompt_token_ids) + len(row.response_token_ids))


def test_a_sandbox_verifier_shows_its_seconds(service):
    from gym_ray.sandbox import SandboxUnavailable

    try:
        [row] = asyncio.run(service.run(_task(1, sandbox=True), 0, Group("s")))
    except SandboxUnavailable as e:
        pytest.skip(f"no sandbox here: {e}")
    if row.status != "ok" and "SandboxUnavailable" in (row.error or ""):
        pytest.skip(f"no sandbox here: {row.error}")
    c = row.cost
    assert (row.status, row.reward, c.sandbox_runs) == ("ok", 1.0, 1)
    assert 0 < c.sandbox_s <= c.verify_wall_s and c.sandbox_cpu_s >= 0


def test_retries_are_counted_with_their_wall(service, policy):
    [row] = asyncio.run(service.run(_task(2), 0, Group("r"), policy=FlakyPolicy(policy)))
    assert (row.status, row.attempt, row.cost.retries) == ("ok", 1, 1)
    assert row.cost.retry_wall_s > 0  # the failed try and the back-off before the next


def test_metrics_and_report_sum_the_costs_and_an_old_run_still_reads(service, tmp_path, capsys):
    rows = asyncio.run(service.run_group(_task(3), Group("m", group_size=2)))
    table = rollouts_to_arrow(rows)
    new, old = tmp_path / "new", tmp_path / "old"
    new.mkdir()
    old.mkdir()
    pq.write_table(table, new / "part-00000-0a.parquet")
    pq.write_table(table.drop_columns(["cost"]), old / "part-00000-0a.parquet")

    summary = metrics_from_dir(new)
    cost = summary["per_env"]["burner"]["cost"]
    assert (cost["accounted"], cost["scored"]) == (2, 2)
    total_cpu = sum(r.cost.cpu_s for r in rows)
    assert cost["cpu_ms_per_scored"] == pytest.approx(total_cpu * 1000 / 2)
    assert cost["stages"]["tool"]["cpu_ms_per_scored"] >= BURN_MS * 0.9
    assert main(["metrics", str(new)]) == 0
    out = capsys.readouterr().out.split("CPU per scored rollout")[1]  # the cost table follows the metrics
    [line] = [ln.split() for ln in out.splitlines() if ln.startswith("burner ")]
    assert line[1:3] == ["2", f"{cost['cpu_ms_per_scored']:.1f}"]  # scored, CPU ms per scored rollout
    written = json.loads((new / ".gym_ray" / "metrics.json").read_text())
    assert written["per_env"]["burner"]["cost"]["scored"] == 2
    assert "Cost: where the time goes" in cost_section(summary) and "burner" in cost_section(summary)

    # written before the column: every row reads with a zero cost, and nothing reports a cost of 0
    assert read_run(old, ["cost"])["cost"].to_pylist() == [RolloutCost().model_dump()] * 2
    stale = metrics_from_dir(old)
    assert stale["per_env"]["burner"]["cost"] is None and format_cost_table(stale) == ""
    assert "no cost records" in cost_section(stale)
    assert main(["metrics", str(old)]) == 0
    out = capsys.readouterr().out
    assert "burner" in out and "CPU per scored" not in out
