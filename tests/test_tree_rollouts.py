"""Tree rollouts through the episode service, in-process: the real scripted policy and the real counter env.

A tree of width w and depth d has w^d leaf rows; siblings share their tokens up to `branch_token_offset`
and every leaf is token-exact against the engine's calls; each branch's env session is its own (a leaf's
reward is what its own increments add up to); every session is closed at the end."""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from pathlib import Path

import pytest

from gym_ray.agents.base import load_tokenizer
from gym_ray.agents.tool_calling import ToolCallingAgent
from gym_ray.config import EnvConfig, ModelConfig, SamplingConfig, TreeConfig, load_config
from gym_ray.episodes import EnvSpec, EpisodeService, Group
from gym_ray.models.scripted import ScriptedPolicy
from gym_ray.resources.local import LocalEnvClient
from gym_ray.tasks import load_tasks
from gym_ray.types import rollouts_from_arrow, rollouts_to_arrow

COUNTER = Path(__file__).resolve().parents[1] / "environments" / "counter"
class Recording:
    """The scripted policy as a PolicyClient, recording each call and the routing key it came with."""

    def __init__(self, policy: ScriptedPolicy):
        self.policy = policy
        self.model_name = policy.model_name
        self.calls: list[tuple[list[int], list[int], list[float]]] = []
        self.keys: set[str | None] = set()

    async def generate(self, prompt_token_ids, sampling, session_id=None):
        gen = await self.policy.generate(list(prompt_token_ids), sampling)
        self.calls.append((list(prompt_token_ids), list(gen.token_ids), list(gen.logprobs)))
        self.keys.add(session_id)
        return gen


@pytest.fixture(scope="module")
def setup(default_model_path):
    env_cfg: EnvConfig = load_config(COUNTER / "config.yaml").envs["counter"]
    env_cfg = env_cfg.model_copy(update={"hosting": "local"})
    tasks = load_tasks(env_cfg.data, default_env="counter")
    chat = load_tokenizer(default_model_path, "chatml_tools")
    scripted = ScriptedPolicy(ModelConfig(kind="scripted", name="scripted", script="tree_helpers:counting_script"),
                              default_model_path)
    return env_cfg, tasks, chat, scripted


def service_for(setup, tree: TreeConfig, policy: Recording) -> tuple[EpisodeService, LocalEnvClient]:
    env_cfg, _, chat, _ = setup
    client = LocalEnvClient("counter", env_cfg)
    service = EpisodeService({"counter": EnvSpec(config=env_cfg, client=client)}, policy, tokenizer=chat,
                             sampling=SamplingConfig(max_tokens=96), tree=tree)
    return service, client


def increments(row) -> int:
    msgs = json.loads(row.messages_json)
    return sum(c["function"]["arguments"]["count"] if isinstance(c["function"]["arguments"], dict)
               else json.loads(c["function"]["arguments"])["count"]
               for m in msgs if m["role"] == "assistant" for c in (m.get("tool_calls") or []))


def assert_leaf_token_exact(row, calls) -> None:
    """Each of the row's model calls is one the engine answered: its prompt is the row's sequence before the
    span, and the span holds exactly the engine's ids and logprobs; mask 1 on spans only."""
    full = row.prompt_token_ids + row.response_token_ids
    n = len(row.prompt_token_ids)
    answered = {(tuple(p), tuple(g)): lp for p, g, lp in calls}
    for start, end in zip(row.gen_span_starts, row.gen_span_ends, strict=True):
        key = (tuple(full[: n + start]), tuple(full[n + start: n + end]))
        assert key in answered, "a span no engine call produced"
        assert row.response_logprobs[start:end] == answered[key]
    spans = {i for s, e in zip(row.gen_span_starts, row.gen_span_ends, strict=True) for i in range(s, e)}
    assert [i for i, m in enumerate(row.response_loss_mask) if m] == sorted(spans)
    assert all(lp == 0.0 for lp, m in zip(row.response_logprobs, row.response_loss_mask, strict=True) if not m)


def test_a_tree_of_width_2_and_depth_2(setup):
    _, tasks, _, scripted = setup
    policy = Recording(scripted)
    tree = TreeConfig(width=2, depth=2, at="assistant_turn")
    service, client = service_for(setup, tree, policy)
    task = tasks[0]  # expected count 3
    rows = asyncio.run(service.run_group(task, Group("g", group_size=2 * tree.leaves)))

    assert len(rows) == 8  # two trees of 2^2 leaves
    assert {r.status for r in rows} == {"ok"}, [r.error for r in rows]
    assert sorted(r.rollout_index for r in rows) == list(range(8))
    assert len({r.rollout_id for r in rows}) == 8 and {r.group_size for r in rows} == {8}
    assert {r.tree_id for r in rows} == {"g-t0", "g-t1"}
    for tree_id in ("g-t0", "g-t1"):
        leaves = sorted((r for r in rows if r.tree_id == tree_id), key=lambda r: r.node_id)
        assert [r.node_id for r in leaves] == ["0.0.0", "0.0.1", "0.1.0", "0.1.1"]
        assert [r.parent_node_id for r in leaves] == ["0.0", "0.0", "0.1", "0.1"]
        seqs = [r.prompt_token_ids + r.response_token_ids for r in leaves]
        for a, b in ((0, 1), (2, 3)):  # siblings: identical up to the offset (the second branch point)
            k = leaves[a].branch_token_offset
            assert k == leaves[b].branch_token_offset and 0 < k < min(len(seqs[a]), len(seqs[b]))
            assert seqs[a][:k] == seqs[b][:k]
        # cousins share the first branch point's prefix: the root's first turn, generated once
        first = leaves[0].prompt_token_ids + leaves[0].response_token_ids[:leaves[0].gen_span_ends[0]]
        assert all(s[:len(first)] == first for s in seqs)
    for r in rows:
        assert r.num_turns == 4 and r.num_tool_calls == 3
        assert_leaf_token_exact(r, policy.calls)
        # each branch's session is its own: the env's count is this leaf's own increments
        assert r.reward == float(increments(r) == 3), (r.node_id, increments(r))
        assert json.loads(r.messages_json)[-1]["content"] == f"The counter is {increments(r)}."
    # per tree: 1 root turn + 2 second turns + 4 third + 4 answers = 11 engine calls, not 4 x 4 = 16
    assert len(policy.calls) == 22
    assert policy.keys == {"g-t0.a0", "g-t1.a0"}  # a tree's branches go to its root's policy replica
    assert len(client.runtime.sessions) == 0  # every session closed: leaves', and branch nodes' after forking
    back = rollouts_from_arrow(rollouts_to_arrow(rows))
    assert [(r.tree_id, r.node_id, r.parent_node_id, r.branch_token_offset) for r in back] == [
        (r.tree_id, r.node_id, r.parent_node_id, r.branch_token_offset) for r in rows]


def test_branching_before_tool_results_and_an_episode_that_ends_first(setup):
    _, tasks, _, scripted = setup
    policy = Recording(scripted)
    service, client = service_for(setup, TreeConfig(width=3, depth=1, at="tool_call"), policy)
    task = tasks[0]
    stop = task.model_copy(update={"task_id": "stop", "prompt": [*task.prompt[:-1], task.prompt[-1].model_copy(
        update={"content": "Stop at once."})]})

    async def go():
        return (await service.run_group(task, Group("a", group_size=3)),
                await service.run_group(stop, Group("b", group_size=3)))

    branched, ended = asyncio.run(go())
    assert [r.node_id for r in sorted(branched, key=lambda r: r.node_id)] == ["0.0", "0.1", "0.2"]
    offsets = {r.branch_token_offset for r in branched}
    assert len(offsets) == 1
    [k] = offsets
    first = branched[0]
    # the branch point follows the first tool result: the shared prefix holds one call, its result, and the
    # template's lead-in to the next call, where the branches' own tokens start
    assert first.gen_span_ends[0] < k - len(first.prompt_token_ids) == first.gen_span_starts[1]
    assert len({tuple((r.prompt_token_ids + r.response_token_ids)[:k]) for r in branched}) == 1
    # an episode that answers before its first branch point is one leaf: the root, unbranched
    [root] = ended
    assert (root.node_id, root.parent_node_id, root.branch_token_offset, root.rollout_index) == ("0", "", 0, 0)
    assert root.status == "ok" and root.num_turns == 1
    assert len(client.runtime.sessions) == 0


class OwnLoop(ToolCallingAgent):
    """A tool-calling agent with a loop of its own: a tree cannot stop it at branch points."""

    async def _loop(self, ep, tools) -> None:
        await super()._loop(ep, tools)


def test_environments_and_agents_that_cannot_branch_are_refused_in_one_line(setup, tmp_path):
    env_cfg, _, chat, scripted = setup
    tree = TreeConfig()
    mcp = EnvConfig(server="gym_ray.integrations.mcp:MCPEnv", config={"command": "no-such-mcp-server"})
    with pytest.raises(ValueError, match=r"^envs\.tools: collect\.tree needs forkable episodes") as e:
        EpisodeService({"tools": EnvSpec(config=mcp)}, Recording(scripted), tokenizer=chat, tree=tree)
    assert "\n" not in str(e.value)
    own_loop = env_cfg.model_copy(update={"agent": env_cfg.agent.model_copy(update={"cls": f"{__name__}:OwnLoop"})})
    with pytest.raises(ValueError, match=r"^envs\.counter: collect\.tree needs an agent with a turn loop to "
                                         r"branch \(ToolCallingAgent, EnvStepAgent\); OwnLoop has a loop of its own$"):
        EpisodeService({"counter": EnvSpec(config=own_loop)}, Recording(scripted), tokenizer=chat, tree=tree)
    steps = env_cfg.model_copy(update={"agent": env_cfg.agent.model_copy(
        update={"cls": "gym_ray.agents.env_step:EnvStepAgent"})})
    with pytest.raises(ValueError, match=r"^envs\.counter: collect\.tree at: tool_call needs tool calls; "
                                         r"EnvStepAgent's actions are env steps"):
        EpisodeService({"counter": EnvSpec(config=steps)}, Recording(scripted), tokenizer=chat,
                       tree=TreeConfig(at="tool_call"))


def test_a_failed_fork_ends_only_its_own_subtree_as_a_masked_leaf(setup):
    """The second branch node's fork fails in the environment: that node is one masked env_error leaf, its
    sibling's subtree is whole, and no session is left open."""
    _, tasks, _, scripted = setup
    policy = Recording(scripted)
    service, client = service_for(setup, TreeConfig(width=2, depth=2), policy)
    server = client.runtime.server
    forks = itertools.count()
    real_fork = server.fork

    def fork(state):
        if server.session_id == "f-t0.a0.n0.1" and next(forks) == 0:
            raise OSError("snapshot store full")
        return real_fork(state)

    server.fork = fork
    rows = asyncio.run(service.run_group(tasks[0], Group("f", group_size=4)))
    by_node = {r.node_id: r for r in rows}
    assert sorted(by_node) == ["0.0.0", "0.0.1", "0.1"]
    failed = by_node["0.1"]
    assert failed.status == "env_error" and failed.mask_sample and failed.failure_stage == "seed"
    assert "fork of session 'f-t0.a0.n0.1' failed: OSError: snapshot store full" in failed.error
    assert failed.rollout_index == 2 and failed.parent_node_id == "0"
    assert all(by_node[n].status == "ok" for n in ("0.0.0", "0.0.1"))
    assert len(client.runtime.sessions) == 0


class Unsure(Recording):
    """An engine least sure of itself on turn `unsure_turn`: its sampled tokens there get low logprobs."""

    def __init__(self, policy: ScriptedPolicy, unsure_turn: int):
        super().__init__(policy)
        self.unsure_turn = unsure_turn

    async def generate(self, prompt_token_ids, sampling, session_id=None):
        gen = await self.policy.generate(list(prompt_token_ids), sampling)
        if self.policy.turn(list(prompt_token_ids)) == self.unsure_turn:
            gen = gen.model_copy(update={"logprobs": [-5.0] * len(gen.token_ids)})
        self.calls.append((list(prompt_token_ids), list(gen.token_ids), list(gen.logprobs)))
        self.keys.add(session_id)
        return gen


@pytest.mark.parametrize("unsure_turn", [1, 2])
def test_token_entropy_branches_where_the_logprobs_say(setup, unsure_turn):
    """The root plays to its end; its branch point is before the call whose tokens were least likely: the
    root's own ending is one branch, the other goes on from a snapshot of the episode and its session."""
    _, tasks, _, scripted = setup
    policy = Unsure(scripted, unsure_turn)
    service, client = service_for(setup, TreeConfig(width=2, depth=1, at="token_entropy"), policy)
    rows = asyncio.run(service.run_group(tasks[0], Group("e", group_size=2)))

    assert sorted(r.node_id for r in rows) == ["0.0", "0.1"] and {r.status for r in rows} == {"ok"}
    own, other = sorted(rows, key=lambda r: r.node_id)
    k = own.branch_token_offset
    assert k == other.branch_token_offset
    assert k - len(own.prompt_token_ids) == own.gen_span_starts[unsure_turn]  # right before the unsure call
    assert (own.prompt_token_ids + own.response_token_ids)[:k] == (other.prompt_token_ids + other.response_token_ids)[:k]
    for r in rows:
        assert_leaf_token_exact(r, policy.calls)
        assert r.num_turns == 4 and r.reward == float(increments(r) == 3)
    # the root's 4 calls, then the other branch's calls from the unsure turn on
    assert len(policy.calls) == 4 + (4 - unsure_turn)
    assert len(client.runtime.sessions) == 0  # leaves' and every snapshot's sessions freed


def test_token_entropy_two_levels_deep(setup):
    _, tasks, _, scripted = setup
    policy = Unsure(scripted, 1)
    service, client = service_for(setup, TreeConfig(width=2, depth=2, at="token_entropy"), policy)
    rows = asyncio.run(service.run_group(tasks[0], Group("d", group_size=4)))

    assert sorted(r.node_id for r in rows) == ["0.0.0", "0.0.1", "0.1.0", "0.1.1"]
    assert sorted(r.rollout_index for r in rows) == [0, 1, 2, 3] and {r.status for r in rows} == {"ok"}
    by_node = {r.node_id: r for r in rows}
    for a, b in (("0.0.0", "0.0.1"), ("0.1.0", "0.1.1")):
        k = by_node[a].branch_token_offset
        assert k == by_node[b].branch_token_offset and k > len(by_node[a].prompt_token_ids)
        seq = [by_node[n].prompt_token_ids + by_node[n].response_token_ids for n in (a, b)]
        assert seq[0][:k] == seq[1][:k]
    for r in rows:
        assert_leaf_token_exact(r, policy.calls)
    assert len(client.runtime.sessions) == 0


def test_the_collector_plays_each_rollout_as_a_tree(ray_cluster, default_model_path):
    """`collect.tree` through the agent actors: num_repeats trees per group, width^depth leaf rows each;
    an environment that cannot fork is refused before any actor starts."""
    from gym_ray.collect import Collector
    from gym_ray.config import validate_config
    from gym_ray.models.scripted import LocalScriptedClient

    replies = [{"name": "increment", "arguments": {"count": 2}}, {"name": "increment", "arguments": {"count": 1}},
               "The counter is 3."]
    policy = LocalScriptedClient(ModelConfig(kind="scripted", name="scripted", replies=replies), default_model_path)
    counter = {"server": "counter", "hosting": "local", "data": [str(COUNTER / "data" / "example.jsonl")],
               "agent": {"max_turns": 6}}
    tree = {"width": 2, "depth": 1, "at": "tool_call"}
    with pytest.raises(ValueError, match=r"^envs\.mcp: collect\.tree needs forkable episodes"):
        Collector(validate_config({"envs": {"mcp": {"server": "gym_ray.integrations.mcp:MCPEnv"}},
                                   "collect": {"tree": tree}}), policy)
    cfg = validate_config({"envs": {"counter": counter}, "model": {"chat_template": "chatml_tools"},
                           "collect": {"num_repeats": 2, "concurrency": 8, "tree": tree}})
    tasks = load_tasks(cfg.envs["counter"].data, default_env="counter")[:2]
    groups = Collector(cfg, policy).collect_sync(tasks)

    assert [len(g.rollouts) for g in groups] == [4, 4]
    for g in groups:
        rows = g.rollouts
        assert sorted(r.rollout_index for r in rows) == [0, 1, 2, 3] and {r.group_size for r in rows} == {4}
        assert {r.status for r in rows} == {"ok"}, [r.error for r in rows]
        assert {r.tree_id for r in rows} == {f"{g.group_id}-t0", f"{g.group_id}-t1"}
        assert sorted(r.node_id for r in rows) == ["0.0", "0.0", "0.1", "0.1"]
        assert all(r.branch_token_offset > len(r.prompt_token_ids) for r in rows)


def test_resume_takes_a_tree_group_with_an_early_leaf_as_done(tmp_path):
    """A tree whose node ended before its branch point has fewer rows than its group's size: still a whole
    group for resume (files hold whole groups); an independent group short of rows is still refused."""
    from gym_ray.collect.sink import ParquetSink, ResumeError, done_groups
    from gym_ray.types import Rollout

    def row(group: str, index: int, **tree) -> Rollout:
        return Rollout(rollout_id=f"{group}-{index}", group_id=group, task_id=group, env="e", rollout_index=index,
                       group_size=4, **tree)

    sink = ParquetSink(tmp_path, rows_per_file=100)
    sink.write(rollouts_to_arrow([row("t", 0, tree_id="t-t0", node_id="0.0.0", parent_node_id="0.0"),
                                  row("t", 1, tree_id="t-t0", node_id="0.0.1", parent_node_id="0.0"),
                                  row("t", 2, tree_id="t-t0", node_id="0.1", parent_node_id="0")]))
    sink.close()
    assert done_groups(tmp_path) == {("e", "t"): "t"}
    sink = ParquetSink(tmp_path, rows_per_file=100)
    sink.write(rollouts_to_arrow([row("i", 0)]))
    sink.close()
    with pytest.raises(ResumeError, match="i has 1 rollouts of 4"):
        done_groups(tmp_path)


def test_a_branch_whose_session_is_lost_is_played_again_from_its_branch_point(setup):
    """Branch 0.1's session vanishes mid-play (what a call meets on a restarted env replica): only that
    subtree is played again, on a fresh session brought to the branch point by its recorded tool calls;
    every leaf is token-exact and scored by its own increments, none masked."""
    _, tasks, _, scripted = setup
    policy = Recording(scripted)
    service, client = service_for(setup, TreeConfig(width=2, depth=2), policy)
    runtime = client.runtime
    real_call = runtime.call_tool
    lost: list[str] = []

    async def call_tool(session_id, *args, **kwargs):
        if session_id == "l-t0.a0.n0.1" and not lost:  # the branch's first own call: its replica is gone
            lost.append(session_id)
            await runtime.close_session(session_id)
        return await real_call(session_id, *args, **kwargs)

    runtime.call_tool = call_tool
    rows = asyncio.run(service.run_group(tasks[0], Group("l", group_size=4)))
    assert lost
    assert sorted(r.node_id for r in rows) == ["0.0.0", "0.0.1", "0.1.0", "0.1.1"]
    assert {r.status for r in rows} == {"ok"}, [r.error for r in rows]
    for r in rows:
        assert_leaf_token_exact(r, policy.calls)
        assert r.reward == float(increments(r) == 3), (r.node_id, increments(r))
    # 11 calls for the tree, and the one whose tool call met the lost session, made again after the re-run
    assert len(policy.calls) == 11 + 1
    by_node = {r.node_id: r for r in rows}
    k = by_node["0.0.0"].prompt_token_ids + by_node["0.0.0"].response_token_ids
    first = len(by_node["0.0.0"].prompt_token_ids) + by_node["0.0.0"].gen_span_ends[0]
    assert all((r.prompt_token_ids + r.response_token_ids)[:first] == k[:first] for r in rows)
    assert len(runtime.sessions) == 0


WORDLE = Path(__file__).resolve().parents[1] / "environments" / "wordle"
_guesses = itertools.count()
GUESSES = ["crane", "pious", "bumpy", "fight", "dodge", "mulch", "wryly", "slate"]


def guessing_script(prompt_text: str, turn: int) -> str:
    """A different allowed word on each call of the script (so branches diverge), and on the last of four
    guesses the answer every other call: half the leaves solve."""
    k = next(_guesses)
    if turn < 3:
        return f"<guess>{GUESSES[k % len(GUESSES)]}</guess>"
    return "<guess>suave</guess>" if k % 2 else "<guess>tryst</guess>"


def wordle_tree(setup, model_path: str, tree: TreeConfig, max_guesses: int):
    """The first wordle task (answer "suave"), a recorded `guessing_script` policy, and a service playing it
    as `tree` with `max_guesses`, in-process."""
    _, _, chat, _ = setup
    env_cfg = load_config(WORDLE / "config.yaml", [f"envs.wordle.config.max_guesses={max_guesses}"]).envs["wordle"]
    env_cfg = env_cfg.model_copy(update={"hosting": "local"})
    [task] = load_tasks(env_cfg.data, default_env="wordle", limit=1)
    assert task.verifier_metadata["answer"] == "suave"
    model = ModelConfig(kind="scripted", name="scripted", script=f"{__name__}:guessing_script")
    policy = Recording(ScriptedPolicy(model, model_path))
    client = LocalEnvClient("wordle", env_cfg)
    service = EpisodeService({"wordle": EnvSpec(config=env_cfg, client=client)}, policy, tokenizer=chat,
                             sampling=SamplingConfig(max_tokens=96), tree=tree)
    return task, policy, client, service


def assert_own_game(row, answer: str, guesses: int) -> None:
    """The row's feedback is the game's own for the row's own guesses, and it is scored by its last one."""
    from gym_ray_env_wordle.server import feedback

    msgs = json.loads(row.messages_json)
    played = [re.fullmatch(r"<guess>(\w+)</guess>", m["content"])[1] for m in msgs if m["role"] == "assistant"]
    assert len(played) == guesses and row.num_turns == guesses and not row.truncated
    observations = [m["content"] for m in msgs if m["role"] == "user"][2:]  # after the task and the rules
    for guess, obs in zip(played, observations, strict=False):  # the last observation ends the game unshown
        assert obs.startswith(f"{guess.upper()} {' '.join(feedback(guess, answer))}.")
    assert row.reward == float(played[-1] == answer)


def test_an_env_step_game_branches_into_independent_games(setup, default_model_path, tmp_path):
    """Wordle (reset/step, the env-step agent) as a width-2, depth-2 tree: four leaves whose siblings share
    their tokens up to the offset, each leaf's feedback the game's own for its own guesses (a branch's
    guesses never reach its sibling's game), and the rows pass `gym-ray check`."""
    from gym_ray.collect.sink import ParquetSink
    from gym_ray.report.checks import CHECKS, ERROR, run_checks

    task, policy, client, service = wordle_tree(setup, default_model_path, TreeConfig(width=2, depth=2), max_guesses=4)
    rows = sorted(asyncio.run(service.run_group(task, Group("w", group_size=4))), key=lambda r: r.node_id)

    assert [r.node_id for r in rows] == ["0.0.0", "0.0.1", "0.1.0", "0.1.1"]
    assert [r.parent_node_id for r in rows] == ["0.0", "0.0", "0.1", "0.1"]
    assert {r.status for r in rows} == {"ok"}, [r.error for r in rows]
    seqs = [r.prompt_token_ids + r.response_token_ids for r in rows]
    for a, b in ((0, 1), (2, 3)):
        k = rows[a].branch_token_offset
        assert k == rows[b].branch_token_offset and 0 < k < min(len(seqs[a]), len(seqs[b]))
        assert seqs[a][:k] == seqs[b][:k] and seqs[a][k:] != seqs[b][k:]
    for r in rows:
        assert_leaf_token_exact(r, policy.calls)
        assert_own_game(r, "suave", guesses=4)
    # the branches' second and third guesses differ, and so does the feedback their own games gave
    second = {json.loads(r.messages_json)[4]["content"] for r in rows}
    assert len(second) == 2 and len({r.reward for r in rows}) == 2
    assert len(policy.calls) == 1 + 2 + 4 + 4  # the shared turns generated once
    assert len(client.runtime.sessions) == 0

    sink = ParquetSink(tmp_path, rows_per_file=100)
    sink.write(rollouts_to_arrow(rows))
    sink.close()
    report = run_checks(tmp_path)
    assert [f for f in report.findings if CHECKS[f.check][0] == ERROR] == []


def test_a_lost_env_step_branch_is_replayed_from_its_branch_point(setup, default_model_path):
    """Branch 0.1's game vanishes at its first own step: it is reset on a fresh session and stepped through
    the root's guess again (the same feedback as recorded), then played on; neither leaf is masked."""
    task, policy, client, service = wordle_tree(setup, default_model_path, TreeConfig(width=2, depth=1), max_guesses=2)
    runtime = client.runtime
    real_step = runtime.step
    lost: list[str] = []

    async def step(session_id, action):
        if session_id == "r-t0.a0.n0.1" and not lost:
            lost.append(session_id)
            await runtime.close_session(session_id)
        return await real_step(session_id, action)

    runtime.step = step
    rows = sorted(asyncio.run(service.run_group(task, Group("r", group_size=2))), key=lambda r: r.node_id)
    assert lost and [r.node_id for r in rows] == ["0.0", "0.1"]
    assert {r.status for r in rows} == {"ok"}, [r.error for r in rows]
    for r in rows:
        assert_leaf_token_exact(r, policy.calls)
        assert_own_game(r, "suave", guesses=2)
    assert len(policy.calls) == 1 + 2 + 1  # the call whose step met the lost game, made again after the replay
    assert len(runtime.sessions) == 0
