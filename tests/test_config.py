"""Config: YAML includes, interpolation, dotlist overrides, and errors that name the key and file."""

from __future__ import annotations

import textwrap

import pytest
from pydantic import ValidationError

from gym_ray.config import (
    ConfigError,
    ModelConfig,
    OpenAIModelConfig,
    ScriptedModelConfig,
    VllmModelConfig,
    load_config,
)


def write(path, text: str):
    path.write_text(textwrap.dedent(text))
    return path


def test_includes_interpolation_and_overrides(tmp_path):
    (tmp_path / "data").mkdir()
    write(tmp_path / "base.yaml", """
        model: {kind: scripted, replies: ["hi"]}
        collect: {concurrency: 8, output_dir: "runs/${collect.num_repeats}x"}
    """)
    cfg_path = write(tmp_path / "run.yaml", """
        includes: [base.yaml]
        envs:
          weather:
            server: gym_ray_env_weather.server:Weather
            data: data/example.jsonl
        collect: {num_repeats: 4}
    """)
    cfg = load_config(cfg_path, ["collect.concurrency=64", "model.name=pol"])
    assert cfg.model.kind == "scripted" and cfg.model.name == "pol"
    assert cfg.collect.concurrency == 64
    assert cfg.collect.output_dir == "runs/4x"
    # data paths are resolved relative to the YAML that names them
    assert cfg.envs["weather"].data == [str((tmp_path / "data/example.jsonl").resolve())]


def test_defaults_describe_a_whole_run():
    cfg = load_config()
    assert cfg.model.kind == "vllm" and cfg.model.model is None
    assert cfg.collect.sampling.max_tokens > 0


def test_unknown_key_is_named(tmp_path):
    p = write(tmp_path / "c.yaml", "collect: {concurency: 3}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown key collect\.concurency"):
        load_config(p)


def test_wrong_type_names_key_and_value(tmp_path):
    p = write(tmp_path / "c.yaml", "collect: {concurrency: many}\n")
    with pytest.raises(ConfigError, match=r"key collect\.concurrency: .*integer.*'many'"):
        load_config(p)


def test_override_wrong_type_and_range():
    with pytest.raises(ConfigError, match=r"collect\.num_repeats"):
        load_config(None, ["collect.num_repeats=0"])
    with pytest.raises(ConfigError, match=r"model\.kind"):
        load_config(None, ["model.kind=tpu"])
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(None, ["collect.concurrency"])


def test_kind_specific_requirement():
    with pytest.raises(ConfigError, match=r"key model\.base_url: required when kind is 'openai'"):
        load_config(None, ["model.kind=openai"])


def test_a_key_of_another_model_kind_is_named(tmp_path):
    """One model per kind: a key the kind does not have fails naming the key and the kind."""
    with pytest.raises(ConfigError, match=r"^<defaults>: unknown key model\.engine_kwargs \(not a key of kind "
                                          r"'scripted'\)$"):
        load_config(None, ["model.kind=scripted", "model.engine_kwargs.max_model_len=64"])
    p = write(tmp_path / "c.yaml", "models:\n  judge: {kind: openai, base_url: 'http://x/v1', replies: [a]}\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: unknown key models\.judge\.replies \(not a key of kind 'openai'\)"):
        load_config(p)
    with pytest.raises(ConfigError, match=r"key model\.kind: must be one of vllm, openai, scripted \(got 'tpu'\)"):
        load_config(None, ["model.kind=tpu"])


def test_switching_model_kind_by_override_drops_the_files_keys_of_the_old_kind(tmp_path):
    p = write(tmp_path / "c.yaml", "model: {kind: vllm, chat_template: chatml_tools, engine_kwargs: {max_model_len: 64},"
                                   " kv_cache_gib: 2}\n")
    cfg = load_config(p, ["model.kind=scripted", "model.replies=[hi]"])
    assert isinstance(cfg.model, ScriptedModelConfig)
    assert (cfg.model.chat_template, cfg.model.replies) == ("chatml_tools", ["hi"])
    assert isinstance(load_config(p).model, VllmModelConfig)


def test_model_config_builds_the_kinds_own_model():
    assert type(ModelConfig()) is VllmModelConfig
    assert type(ModelConfig(kind="scripted", replies=["x"])) is ScriptedModelConfig
    openai = ModelConfig.model_validate({"kind": "openai", "base_url": "http://x/v1"})
    assert type(openai) is OpenAIModelConfig and isinstance(openai, ModelConfig)
    with pytest.raises(ValidationError, match="script"):
        ModelConfig(kind="vllm", script="m:f")


def test_missing_file_and_missing_include(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    p = write(tmp_path / "c.yaml", "includes: [gone.yaml]\n")
    with pytest.raises(ConfigError, match=r"gone\.yaml: config file not found \(included from .*c\.yaml\)"):
        load_config(p)


def test_bad_interpolation_names_key(tmp_path):
    p = write(tmp_path / "c.yaml", "collect: {output_dir: '${nowhere.at_all}'}\n")
    with pytest.raises(ConfigError, match=r"key collect\.output_dir"):
        load_config(p)


def test_include_cycle(tmp_path):
    write(tmp_path / "a.yaml", "includes: [b.yaml]\n")
    write(tmp_path / "b.yaml", "includes: [a.yaml]\n")
    with pytest.raises(ConfigError, match="include cycle"):
        load_config(tmp_path / "a.yaml")


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    p = write(tmp_path / "c.yaml", "collect:\n  num_repeats: 2\n  sampling: {temperature: 1.0\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert str(e.value).startswith(f"{p.resolve()}: line 4, column 1: not valid YAML: ")
    assert "(while parsing a flow mapping at line 3)" in str(e.value) and "\n" not in str(e.value)


def test_config_bytes_that_are_not_utf8_name_the_line_and_a_bom_is_fine(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_bytes(b"collect:\n  output_dir: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: line 2: not UTF-8 text"):
        load_config(p)
    p.write_bytes(b"\xef\xbb\xbfcollect: {num_repeats: 3}\n")
    assert load_config(p).collect.num_repeats == 3
