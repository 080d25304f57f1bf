"""Tree advantages and shared-prefix loss weights on real trees (`tree_helpers.play_trees`: the counter env
and the scripted policy in-process; width 2, depth 2: 4 leaves, two branch levels)."""

from __future__ import annotations

import pandas as pd
import pytest
from tree_helpers import counter_tasks, play_trees

from gym_ray.advantages import node_values, prefix_loss_weights, tree_advantages
from gym_ray.config import TreeConfig
from gym_ray.errors import Failure, FailureKind, FailureStage, Status
from gym_ray.types import Rollout, rollouts_to_arrow


@pytest.fixture(scope="module")
def tree_rows(default_model_path) -> list[Rollout]:
    """Two trees of width 2, depth 2 on a task whose reward is 1 when three increments add up to 3."""
    rows = play_trees(default_model_path, TreeConfig(width=2, depth=2, at="assistant_turn"), counter_tasks()[:1], 2)
    assert len(rows) == 8 and {r.status for r in rows} == {Status.OK}, [r.error for r in rows]
    return rows


def rewarded(rows: list[Rollout], rewards: list[float]) -> list[Rollout]:
    """The rows with chosen rewards (the scripted policy's are mostly 0); masked where reward is None."""
    failure = Failure(stage=FailureStage.VERIFICATION, kind=FailureKind.EXCEPTION)
    out = []
    for r, rew in zip(rows, rewards, strict=True):
        if rew is None:
            r = r.model_copy(update={"status": Status.ENV_ERROR, "mask_sample": True, "reward": 0.0,
                                     "error": "verifier raised", "failure_stage": failure.stage,
                                     "failure_kind": failure.kind, "failure_delivery": failure.delivery})
        else:
            r = r.model_copy(update={"reward": rew})
        out.append(r)
    return out


def test_node_values_and_leaf_advantages_follow_the_tree(tree_rows):
    rows = rewarded(tree_rows, [1, 0, 1, 1, 0, 0, 0, 1])
    by_node = {(r.tree_id, r.node_id): r for r in rows}
    assert by_node[("g0-t0", "0.0.0")].parent_node_id == "0.0"
    values = node_values(rows)
    assert values[("g0-t0", "0")] == 0.75 and values[("g0-t0", "0.0")] == 0.5 and values[("g0-t0", "0.1")] == 1.0
    assert values[("g0-t1", "0")] == 0.25 and values[("g0-t1", "0.1")] == 0.5
    # a leaf against its siblings' mean (the leaves sharing its parent)
    assert tree_advantages(rows) == [0.5, -0.5, 0.0, 0.0, 0.0, 0.0, -0.5, 0.5]
    # plus the GRPO-style global term: the leaf against its whole tree
    glob = tree_advantages(rows, global_term=True)
    assert glob == pytest.approx([0.75, -1.25, 0.25, 0.25, -0.25, -0.25, -0.75, 1.25])
    # the same numbers from Arrow and pandas
    table = rollouts_to_arrow(rows)
    assert tree_advantages(table) == tree_advantages(table.to_pandas()) == tree_advantages(rows)


def test_failed_leaves_are_left_out_never_counted_as_zero(tree_rows):
    rows = rewarded(tree_rows, [1, None, 1, 0, None, None, None, None])
    adv = tree_advantages(rows, global_term=True)
    assert adv[1] is None and adv[4:] == [None] * 4
    assert adv[0] == pytest.approx(0.0 + (1 - 2 / 3))  # its parent's only scored leaf is itself
    assert node_values(rows)[("g0-t0", "0")] == pytest.approx(2 / 3)
    assert ("g0-t1", "0") not in node_values(rows)  # no scored leaf below: no value, not 0
    weights = prefix_loss_weights(rows, "weighted")
    assert all(w == 0 for w in weights[1]) and all(w == 0 for r in weights[4:] for w in r)


def test_a_root_that_ended_before_branching_is_its_trees_only_leaf(tree_rows):
    root = tree_rows[0].model_copy(update={"node_id": "0", "parent_node_id": "", "branch_token_offset": 0})
    rows = [root, *tree_rows[4:]]
    assert tree_advantages(rows)[0] == 0.0 and node_values(rows)[("g0-t0", "0")] == root.reward
    assert prefix_loss_weights(rows)[0] == [float(m) for m in root.response_loss_mask]


def test_independent_rollouts_are_a_group_of_leaves():
    rows = [Rollout(rollout_id=f"r{i}", group_id="g", task_id="t", env="e", rollout_index=i, reward=rew)
            for i, rew in enumerate([1.0, 0.0, 0.0, 1.0])]
    assert tree_advantages(rows) == tree_advantages(rows, global_term=True) == [0.5, -0.5, -0.5, 0.5]
    assert prefix_loss_weights(rows) == [[] for _ in rows]


@pytest.mark.parametrize("mode", ["train_once", "weighted"])
def test_a_shared_prefix_is_trained_once_in_all(tree_rows, mode):
    rows = [r for r in tree_rows if r.tree_id == "g0-t0"]
    weights = prefix_loss_weights(rows, mode)
    n = len(rows[0].prompt_token_ids)
    first_branch = rows[0].gen_span_starts[1]  # up to the second model call: held by all four leaves
    for r, w in zip(rows, weights, strict=True):
        assert len(w) == len(r.response_loss_mask)
        own = r.branch_token_offset - n  # past it the leaf's tokens are its own: full weight
        assert w[own:] == [float(m) for m in r.response_loss_mask[own:]]
    # each shared token counts once in the loss: its weights over the leaves holding it add up to its mask
    total, mask = {}, {}
    for r, w in zip(rows, weights, strict=True):
        for t in range(r.branch_token_offset - n):
            key = ("0" if t < first_branch else r.parent_node_id, t)  # the node whose leaves all hold it
            total[key] = total.get(key, 0) + w[t]
            mask[key] = r.response_loss_mask[t]
    assert total == pytest.approx(mask) and 1 in mask.values()
    if mode == "train_once":
        assert all(w in (0.0, 1.0) for ws in weights for w in ws)
        assert weights[0] == [float(m) for m in rows[0].response_loss_mask]  # the first leaf keeps all of it
        assert set(weights[3][:first_branch]) == {0.0}
    else:
        assert weights[0][:first_branch] == [m / 4 for m in rows[0].response_loss_mask[:first_branch]]
        own = rows[0].branch_token_offset - n
        assert weights[0][first_branch:own] == [m / 2 for m in rows[0].response_loss_mask[first_branch:own]]


def test_an_unknown_mode_is_named():
    with pytest.raises(ValueError, match="prefix loss mode 'twice': expected one of train_once, weighted"):
        prefix_loss_weights([], "twice")


def test_pandas_rows_with_array_columns(tree_rows):
    frame = pd.DataFrame([r.model_dump() for r in tree_rows])
    assert prefix_loss_weights(frame) == prefix_loss_weights(tree_rows)
