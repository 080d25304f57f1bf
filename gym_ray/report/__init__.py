"""Seeing a run: `gym-ray check` (health checks), `gym-ray report` (report.html), `gym-ray compare`, the
dataset card. Each reads a run directory's Parquet parts and `.gym_ray/` files (gym_ray.collect.layout)."""


class RunInputError(ValueError):
    """A directory that is not a readable run (no part files, unreadable rows); the CLI exits 2."""
