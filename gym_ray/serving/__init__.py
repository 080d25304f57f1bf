"""Serve helpers that policy hosting (`gym_ray.models`) and environment hosting (`gym_ray.resources`) share:
coalesced handle calls (`batch`), session affinity (`routing`) and the error of an app that did not come up
(`failures`). Nothing here knows a policy or an environment; see README.md in this folder."""
