"""Untrusted code under bubblewrap: `Sandbox` runs a command with no network, a read-only system, a private
in-memory work dir and limits on time, memory, processes, output and files (see README.md in this folder).

`values.run_values` runs the by-value test runner (`programs/runner.py`) that the code verifier uses."""

from gym_ray.sandbox.bwrap import SandboxUnavailable
from gym_ray.sandbox.limits import SandboxLimits, SandboxResult, SandboxStatus
from gym_ray.sandbox.run import Sandbox

__all__ = ["Sandbox", "SandboxLimits", "SandboxResult", "SandboxStatus", "SandboxUnavailable"]
