"""A Serve app that did not come up: one error type for policies and environments, and the replica's own
reason, which Serve keeps in the deployment's status rather than in the error `serve.run` raises."""

from __future__ import annotations

import re

from ray import serve

_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # Ray colours the actor name in tracebacks


class DeploymentError(RuntimeError):
    """A Serve app did not come up; the message names the env or model and the replica's own exception."""


def failure_cause(app_name: str, error: BaseException) -> str:
    """The replica's exception (the last line of its traceback) behind Serve's "Failed to update the
    deployments": it is in the failed deployment's status message, not in the error `serve.run` raises."""
    try:
        app = serve.status().applications.get(app_name)
    except Exception:  # noqa: BLE001 - without a status the raised error is all there is to say
        app = None
    texts = [d.message for d in app.deployments.values() if d.status == "DEPLOY_FAILED"] if app else []
    for text in [*texts, str(error)]:
        lines = [ln.strip() for ln in _ANSI.sub("", text).splitlines() if ln.strip()]
        if lines:
            return lines[-1]
    return type(error).__name__
