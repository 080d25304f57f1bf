"""The run directory's layout: the Parquet parts at the top, everything else in the hidden `.gym_ray/`.

    RUN_DIR/part-000000-<hex>.parquet ...   the rows: the dataset itself
    RUN_DIR/.gym_ray/run.json               manifest: run id (hence group ids), num_repeats, num_tasks, and
                                            what the run is (identity.py), which a resume must match
    RUN_DIR/.gym_ray/lock                   the flock of the run writing here (runlock.py)
    RUN_DIR/.gym_ray/config.json            the run's validated config
    RUN_DIR/.gym_ray/metrics.json           the metrics summary
    RUN_DIR/.gym_ray/check.json             `gym-ray check` verdicts
    RUN_DIR/.gym_ray/report.html            `gym-ray report`
    RUN_DIR/.gym_ray/README.md              the Hugging Face dataset card

Why hidden: HF `datasets` (`load_dataset(RUN_DIR)`, `data_dir=`), pandas, pyarrow and Ray Data all read
every file of a directory as data, except names starting with "." (pyarrow and Ray also skip "_", HF does
not). Any other file at the top, even a README.md, breaks one of them.

Run directories written before this layout keep `_run.json`, `_lock` and `metrics.json` at the top;
they are read where they are and moved in here when a run resumes into the directory. On an object store
(`s3://...`, storage.py) the same names are object keys under the prefix.
"""

from __future__ import annotations

import os
from pathlib import Path

from gym_ray.collect import storage

META_DIR = ".gym_ray"
MANIFEST = "run.json"
LOCK = "lock"
CONFIG = "config.json"
METRICS = "metrics.json"
CHECK = "check.json"
REPORT = "report.html"
CARD = "README.md"

LEGACY_MANIFEST = "_run.json"
LEGACY_LOCK = "_lock"
LEGACY_METRICS = "metrics.json"


def meta_dir(run_dir: str | Path) -> Path:
    return storage.join(run_dir, META_DIR)


def meta_path(run_dir: str | Path, name: str) -> Path:
    return storage.join(run_dir, META_DIR, name)


def manifest_path(run_dir: str | Path) -> Path:
    """The manifest to read: `.gym_ray/run.json`, else an old directory's `_run.json`."""
    new = meta_path(run_dir, MANIFEST)
    if storage.is_uri(run_dir):  # object stores hold no directories of the old layout
        return new
    old = Path(run_dir) / LEGACY_MANIFEST
    return old if not new.exists() and old.exists() else new


def migrate_legacy(run_dir: str | Path) -> list[str]:
    """Move an old run directory's (one with `_run.json`) top-level manifest and metrics into `.gym_ray/`;
    runlock calls it under the lock, and removes the old `_lock` itself. Returns the names moved."""
    d = Path(run_dir)
    moved: list[str] = []
    if not (d / LEGACY_MANIFEST).is_file():
        return moved
    for old, new in ((LEGACY_MANIFEST, MANIFEST), (LEGACY_METRICS, METRICS)):
        src = d / old
        if src.is_file():
            meta_dir(d).mkdir(exist_ok=True)
            os.replace(src, meta_path(d, new))
            moved.append(old)
    return moved
