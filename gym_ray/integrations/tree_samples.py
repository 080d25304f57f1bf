"""Tree rollouts for trainers that ask for one sample per call (VeRL's agent loop, OpenRLHF's executor).

Such a trainer calls its agent `n` times per prompt, concurrently. With `collect.tree` (L = width^depth
leaves) sample i of a prompt is leaf i % L of tree i // L: the first call for a tree plays it, the other
L - 1 await the same play and take their own leaf. So `n` must be a multiple of L and a prompt's samples
must run in one process (OpenRLHF: always; VeRL: one agent loop worker per prompt's `n` samples).

A leaf's loss mask keeps the shared prefix once per tree (`train_once`: binary, what these trainers'
masks hold). A node that ended before branching stands for its whole subtree: the samples of its missing
leaves are masked copies of it (`mask_sample`, status `tree_filler`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable

from gym_ray.advantages import prefix_loss_weights
from gym_ray.types import Rollout

FILLER_STATUS = "tree_filler"


class TreeSamples:
    """The trees in play, shared by the calls of their samples; a tree is forgotten once all its leaves
    were taken."""

    def __init__(self) -> None:
        self._trees: dict[tuple[Hashable, int], list] = {}

    async def rows(self, key: Hashable, index: int, leaves: int,
                   play: Callable[[int], Awaitable[list[Rollout]]]) -> list[Rollout]:
        """The rows of the tree sample `index` of prompt `key` belongs to; `play(first_index)` plays it."""
        tree = (key, index // leaves)
        entry = self._trees.get(tree)
        if entry is None:
            entry = self._trees[tree] = [asyncio.ensure_future(play(tree[1] * leaves)), 0]
        entry[1] += 1
        if entry[1] == leaves:
            del self._trees[tree]
        return await asyncio.shield(entry[0])


def is_filler(row: Rollout) -> bool:
    return "+filler" in row.rollout_id


def leaf_samples(rows: list[Rollout], index: int) -> list[tuple[Rollout, list[int]]]:
    """Sample `index`'s rows (its episode's segments) with their loss masks, the shared prefix kept in one
    leaf per tree; for a leaf that does not exist, masked copies of the leaf standing for it."""
    weights = prefix_loss_weights(rows, "train_once")
    mine = [(r, [int(w) for w in ws]) for r, ws in zip(rows, weights, strict=True) if r.rollout_index == index]
    if mine:
        return mine
    stand = max(r.rollout_index for r in rows if r.rollout_index < index)
    return [(r.model_copy(update={"mask_sample": True, "rollout_index": index,
                                  "rollout_id": f"{r.rollout_id}+filler{index}"}), [0] * len(r.response_loss_mask))
            for r in rows if r.rollout_index == stand]
