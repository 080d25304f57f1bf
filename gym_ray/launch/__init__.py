"""Bring-up: what `gym-ray run`, `serve` and `collect` do around the collector. `preflight` builds every part
of a config in the driver, `deploy` connects Ray and deploys the models and environments on Serve (`apps`
for Serve config files), `commands` holds the commands as use cases (`run`, `serve`, `collect_served`).
Nothing is imported here: a Serve replica that loads `gym_ray.launch.apps` pays for that module only."""
