"""The run directory: one value (`RunDir`, a local path or an `s3://` prefix) that knows where the Parquet
parts, the manifest, the lock and the other `.gym_ray/` files are, and reads, writes and lists them; the
lock (`hold`) and the readers of the rows (`read_rollout_table`, `read_run`) that every command shares.
"""

from gym_ray.rundir.location import RunDir
from gym_ray.rundir.lock import RunDirError, hold
from gym_ray.rundir.parts import RunInputError, part_files, read_part, read_rollout_table, read_run

__all__ = ["RunDir", "RunDirError", "RunInputError", "hold", "part_files", "read_part", "read_rollout_table",
           "read_run"]
