"""Collection: tasks x num_repeats as complete groups, run by agent actors, streamed into Parquet.

`Collector` is the Python API (trainer drivers, the CLI); `ParquetSink` and `MetricsAccumulator` are
usable on their own.
"""

from gym_ray.collect.api import Collector, load_run_tasks, tables_to_groups
from gym_ray.collect.metrics import MetricsAccumulator, format_table, metrics_from_dir
from gym_ray.collect.plan import GroupSpec, plan_groups
from gym_ray.collect.scheduler import ActorStartError
from gym_ray.collect.sink import ParquetSink, ResumeError, done_groups
from gym_ray.collect.stream import RolloutStream, SyncRolloutStream

__all__ = [
    "ActorStartError", "Collector", "GroupSpec", "MetricsAccumulator", "ParquetSink", "ResumeError",
    "RolloutStream", "SyncRolloutStream", "done_groups", "format_table", "load_run_tasks", "metrics_from_dir", "plan_groups",
    "tables_to_groups",
]
