"""Secrets never reach a row or a log line: an endpoint that echoes the API key in
its error body, and log records that carry it."""

from __future__ import annotations

import io
import logging

from agent_fakes import FakeEnv
from test_agents import run
from test_models_external import KEY, upstream  # noqa: F401 - the fixture

from gym_ray.agents.base import load_tokenizer
from gym_ray.agents.tool_calling import ToolCallingAgent
from gym_ray.config import ModelConfig
from gym_ray.models.client import make_policy_client
from gym_ray.redact import MASK, install_log_redaction, redact, register_secret


def test_an_echoed_key_is_masked_in_the_row(upstream, monkeypatch, default_model_path):  # noqa: F811
    # A variable name that does not look secret: only the client's registration can catch its value.
    monkeypatch.setenv("GYM_RAY_UPSTREAM", KEY)
    upstream.plan[:] = ["echo401"]
    cfg = ModelConfig(kind="openai", base_url=upstream.base_url, model="m", api_key_env="GYM_RAY_UPSTREAM",
                      timeout_s=2.0, max_retries=0)
    policy = make_policy_client(cfg, "unused")
    [row] = run(ToolCallingAgent, policy, FakeEnv(), load_tokenizer(default_model_path, "chatml_tools"))
    assert row.status == "model_error" and "HTTP 401" in row.error
    assert KEY not in row.error and MASK in row.error
    assert KEY not in row.model_dump_json()


def test_log_records_are_masked():
    register_secret("tok-abcdef-987654321")
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        install_log_redaction()
        logging.getLogger("gym_ray.test").warning("upstream said %s", "bad token tok-abcdef-987654321")
        try:
            raise RuntimeError("key tok-abcdef-987654321 refused")
        except RuntimeError:
            logging.getLogger("gym_ray.test").exception("call failed")
    finally:
        root.removeHandler(handler)
    text = out.getvalue()
    assert "tok-abcdef-987654321" not in text and text.count(MASK) == 3


def test_short_values_and_ordinary_variables_are_left_alone(monkeypatch):
    monkeypatch.setenv("HOME_DIR_NAME", "ordinary-value-123")
    monkeypatch.setenv("X_TOKEN", "1")
    assert redact("ordinary-value-123 and 1") == "ordinary-value-123 and 1"
