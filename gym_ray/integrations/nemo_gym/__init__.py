"""NeMo Gym both ways: gym_ray's environments as NeMo Gym resources servers (a port per env, a NeMo Gym
config naming them), task rows to and from NeMo Gym's JSONL, and gym_ray agents behind NeMo Gym's `/run`."""
