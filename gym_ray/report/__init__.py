"""Seeing a run: `gym-ray check` (health checks), `gym-ray report` (report.html), `gym-ray compare`, the
dataset card. Each reads a run directory's Parquet parts (`gym_ray.rundir.read_run`) and `.gym_ray/` files
(`gym_ray.rundir.RunDir`)."""
