"""Online monitors: detectors fed each finished group while a run goes on, for reward hacking and collapse.

    runner = MonitorRunner(cfg.collect.monitors, cfg.envs)
    alerts = await runner.observe(table)        # an Arrow table of finished, complete groups
    runner.stopped_by                            # the first alert of a monitor set to `on_alert: stop`

The Collector (so `gym-ray run` / `collect`, `collect_to_dir`, `RolloutStream` and the TRL rollout function)
runs one when `collect.monitors` names a detector; alerts go to the progress line, the Ray metrics
(`ray_gym_ray_monitor_alerts_total`), `.gym_ray/alerts.jsonl` and the report.
"""

from gym_ray.monitors.detectors import DETECTORS, Alert, Episode, GroupView
from gym_ray.monitors.runner import ALERTS_FILE, MonitorRunner, MonitorStop, print_alert, read_alerts
from gym_ray.monitors.signals import grader_pattern, no_reward_variance

__all__ = ["ALERTS_FILE", "DETECTORS", "Alert", "Episode", "GroupView", "MonitorRunner", "MonitorStop",
           "grader_pattern", "no_reward_variance", "print_alert", "read_alerts"]
