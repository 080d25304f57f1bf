"""`gym-ray env check NAME|PATH`: an environment validated in-process before a long run (`checks`), found
and imported even before its package is installed (`load`), its metadata keys read from its code (`static`)."""

from gym_ray.envcheck.checks import Finding, Report, check_env, format_report
from gym_ray.envcheck.load import EnvCheckInputError

__all__ = ["EnvCheckInputError", "Finding", "Report", "check_env", "format_report"]
