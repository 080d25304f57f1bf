"""The episode service: one episode, its retries and its failure record -> rows.

What the collector's agent actors and every trainer adapter call:

    service = EpisodeService.from_config("run.yaml", ["collect.sampling.max_tokens=256"], policy=policy)
    rows = await service.run(task, rollout_index=0, group=Group("g1", group_size=4))
"""

from gym_ray.episodes.guard import EnvCallError, PolicyCallError
from gym_ray.episodes.service import EnvSpec, EpisodeService, Group, failed_row

__all__ = ["EnvCallError", "EnvSpec", "EpisodeService", "Group", "PolicyCallError", "failed_row"]
