"""A run directory as one value, parsed once: a local path or an object-store URI (`s3://bucket/prefix`,
`gs://...`, reached through pyarrow's filesystems, so every node of a cluster, and the trainer, reads the same
rows). Its layout: the Parquet parts at the top, everything else in the hidden `.gym_ray/`:

    RUN_DIR/part-000000-<hex>.parquet ...   the rows: the dataset itself
    RUN_DIR/.gym_ray/run.json               manifest: run id (hence group ids), num_repeats, num_tasks, and
                                            what the run is (the collector's run identity), which a resume
                                            must match
    RUN_DIR/.gym_ray/lock                   the flock of the run writing here (lock.py)
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
the same names are object keys under the prefix; a file there is one PUT, which appears whole or not at
all (what temp-name-then-rename gives on a disk). S3 endpoint and credentials come from the usual AWS
variables (`AWS_ENDPOINT_URL` for MinIO / moto / other S3-compatible stores, `AWS_ACCESS_KEY_ID`,
`AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`).
"""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

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

PART = re.compile(r"^part-(\d+)-[0-9a-f]+\.parquet$")

# A file of a run directory: a Path when the directory is local, its URI (a str) on an object store.
Location = Path | str


@dataclass(frozen=True)
class RunDir:
    """Where a run's rows and files are. `RunDir.of(x)` parses a path or URI once; every reader and writer
    asks it for a file's location and reads, writes and lists through it."""

    where: str  # the local path, or the URI without a trailing "/"
    remote: bool = False

    @classmethod
    def of(cls, where: str | Path | RunDir) -> RunDir:
        """An object-store URI (`scheme://...`) or a local path (`file://` and plain paths are local)."""
        if isinstance(where, RunDir):
            return where
        if isinstance(where, str) and "://" in where and not where.startswith("file://"):
            return cls(where.rstrip("/"), remote=True)
        return cls.local(where)

    @classmethod
    def local(cls, path: str | Path) -> RunDir:
        return cls(str(Path(path)))

    def __str__(self) -> str:
        return self.where

    @property
    def path(self) -> Path:
        """The local directory (an object store has none: callers branch on `remote` first)."""
        if self.remote:
            raise ValueError(f"{self.where} is on an object store, not a local directory")
        return Path(self.where)

    @property
    def name(self) -> str:
        return self.where.rsplit("/", 1)[-1] if self.remote else self.path.name

    def join(self, *names: str) -> Location:
        return "/".join([self.where, *names]) if self.remote else self.path.joinpath(*names)

    def meta(self, name: str) -> Location:
        """A file of the hidden `.gym_ray/` folder (CONFIG, METRICS, ...)."""
        return self.join(META_DIR, name)

    @property
    def manifest(self) -> Location:
        """The manifest to read: `.gym_ray/run.json`, else an old directory's `_run.json`."""
        new = self.meta(MANIFEST)
        if self.remote:  # object stores hold no directories of the old layout
            return new
        old = self.path / LEGACY_MANIFEST
        return old if not new.exists() and old.exists() else new

    def parts(self) -> list[Location]:
        """Finished part files, in write order."""
        found = [(int(m.group(1)), n) for n in self.list_names() if (m := PART.match(n))]
        return [self.join(n) for _, n in sorted(found)]

    def next_part_index(self) -> int:
        parts = self.parts()
        return int(PART.match(_base_name(parts[-1])).group(1)) + 1 if parts else 0

    # -- files, through the local filesystem or pyarrow's ------------------------------------------------

    def list_names(self) -> list[str]:
        """Names of the files directly in the directory (none when it does not exist)."""
        if not self.remote:
            return [c.name for c in self.path.iterdir()] if self.path.is_dir() else []
        import pyarrow.fs as pafs

        fs, base = self._fs
        infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
        return [i.base_name for i in infos if i.type == pafs.FileType.File]

    def is_file(self, loc: Location) -> bool:
        if not self.remote:
            return Path(loc).is_file()
        import pyarrow.fs as pafs

        fs, path = self._inside(loc)
        return fs.get_file_info(path).type == pafs.FileType.File

    def read_bytes(self, loc: Location) -> bytes:
        if not self.remote:
            return Path(loc).read_bytes()
        fs, path = self._inside(loc)
        with fs.open_input_stream(path) as f:
            return f.read()

    def write_bytes(self, loc: Location, data: bytes) -> None:
        """Atomic: on a disk a temp file, fsync, rename (a crash leaves the old file or the new one, never a
        torn one); on an object store one upload, which replaces the object whole."""
        if self.remote:
            fs, path = self._inside(loc)
            with fs.open_output_stream(path) as f:
                f.write(data)
            return
        path = Path(loc)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            with tmp.open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a power loss
        finally:
            os.close(dir_fd)

    def parquet_source(self, loc: Location):
        """(what `pq.read_table` takes, filesystem or None) for a part file."""
        if not self.remote:
            return loc, None
        fs, path = self._inside(loc)
        return path, fs

    def migrate_legacy(self) -> list[str]:
        """Move an old run directory's (one with `_run.json`) top-level manifest and metrics into `.gym_ray/`;
        the lock calls it under the flock, and removes the old `_lock` itself. Returns the names moved."""
        d = self.path
        moved: list[str] = []
        if not (d / LEGACY_MANIFEST).is_file():
            return moved
        for old, new in ((LEGACY_MANIFEST, MANIFEST), (LEGACY_METRICS, METRICS)):
            src = d / old
            if src.is_file():
                (d / META_DIR).mkdir(exist_ok=True)
                os.replace(src, self.meta(new))
                moved.append(old)
        return moved

    @cached_property
    def _fs(self):
        """(pyarrow filesystem, the directory's path inside it); a bad URI is one line naming the option."""
        import pyarrow.fs as pafs

        try:
            return pafs.FileSystem.from_uri(self.where)
        except (ValueError, OSError) as e:
            raise ValueError(f"collect.output_dir {self.where}: not a storage URI pyarrow can open: {e}") from None

    def _inside(self, loc: Location):
        """(filesystem, path inside it) of a file of this directory on an object store."""
        loc = str(loc)
        if loc != self.where and not loc.startswith(f"{self.where}/"):
            raise ValueError(f"{loc} is not in the run directory {self.where}")
        fs, base = self._fs
        return fs, base + loc[len(self.where):]


def _base_name(loc: Location) -> str:
    return str(loc).rstrip("/").rsplit("/", 1)[-1]
