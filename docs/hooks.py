"""The site's part pages are the repository's READMEs, read where they are and placed at their repository
paths (`gym_ray/collect/README.md` -> `gym_ray/collect/`).

One source: each part documents itself beside its code, and nothing is copied into `docs/`. Because a
README keeps its repository path, the relative links between READMEs resolve unchanged, and the strict
build checks every one of them and their anchors. Each environment package's README is appended to the
nav's `Environments` section, so a new package gets its page without an edit here.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "environments/README.md", "environments/*/README.md", "gym_ray/**/README.md",
         "deploy/README.md", "benchmarks/RESULTS.md"]
ENVIRONMENTS_SECTION = "Environments"


def _sources() -> list[str]:
    return sorted({p.relative_to(ROOT).as_posix() for pattern in PAGES for p in ROOT.glob(pattern)})


def on_config(config):
    envs = sorted(p for p in _sources() if p.count("/") == 2 and p.startswith("environments/"))
    for entry in config.nav or []:
        if isinstance(entry, dict) and ENVIRONMENTS_SECTION in entry:
            entry[ENVIRONMENTS_SECTION].extend(p for p in envs if p not in entry[ENVIRONMENTS_SECTION])
    return config


def on_files(files, config):
    for uri in _sources():
        files.append(File.generated(config, uri, abs_src_path=str(ROOT / uri)))
    return files
