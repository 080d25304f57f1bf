"""Trusting a stored run's rewards again: `reverify_run` scores its episodes with another (or a corrected)
verifier without the policy, and `replay_rollout` makes an episode's recorded tool calls again against a
fresh session, naming every result that differs from the record."""

from gym_ray.reverify.replay import Divergence, Replay, format_replay, replay_rollout
from gym_ray.reverify.rescore import Reverified, format_reverified, reverify_run

__all__ = ["Divergence", "Replay", "Reverified", "format_replay", "format_reverified", "replay_rollout",
           "reverify_run"]
