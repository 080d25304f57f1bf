"""Parquet sink: complete groups in, rolled files out, each appearing atomically (temp name, then rename).

Readers (`ray.data.read_parquet`, pyarrow datasets) skip names starting with "." so a file being written is
never seen half-done; on an object store (`s3://...`, gym_ray.rundir) a file is one upload, which appears whole
or not at all. Every file holds whole groups only, which is what makes resume exact: a group is
either in a finished file or it is not done.
"""

from __future__ import annotations

import os
import time
import uuid
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from gym_ray.rundir import RunDir, RunDirError, read_rollout_table
from gym_ray.rundir.location import Location
from gym_ray.types import ROLLOUT_SCHEMA


class ResumeError(ValueError):
    """The output directory does not fit the run (e.g. an incomplete group in a finished file)."""


class ParquetSink:
    """Buffers Arrow tables of complete groups; rolls a file every `rows_per_file` rows or `roll_seconds`."""

    def __init__(self, output_dir: str | Path | RunDir, rows_per_file: int = 512, roll_seconds: float = 30.0):
        self.run = RunDir.of(output_dir)
        if not self.run.remote:
            self.run.path.mkdir(parents=True, exist_ok=True)
        self.rows_per_file = rows_per_file
        self.roll_seconds = roll_seconds
        self._next_index = self.run.next_part_index()
        self._buffer: list[pa.Table] = []
        self._buffered_rows = 0
        self._first_buffered_at: float | None = None
        self.files_written: list[Location] = []
        self.rows_written = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        if table.schema != ROLLOUT_SCHEMA:
            table = table.select(ROLLOUT_SCHEMA.names).cast(ROLLOUT_SCHEMA)
        if self._first_buffered_at is None:
            self._first_buffered_at = time.monotonic()
        self._buffer.append(table)
        self._buffered_rows += table.num_rows
        if self._buffered_rows >= self.rows_per_file:
            self.flush()
        else:
            self.maybe_roll()

    def maybe_roll(self) -> None:
        """Call now and then: rolls the buffer once it has waited `roll_seconds`."""
        if self._first_buffered_at is not None and time.monotonic() - self._first_buffered_at >= self.roll_seconds:
            self.flush()

    def flush(self) -> Location | None:
        if not self._buffer:
            return None
        table = pa.concat_tables(self._buffer)
        name = f"part-{self._next_index:06d}-{uuid.uuid4().hex[:8]}.parquet"
        final = self.run.join(name)
        if self.run.remote:
            self._put(table, final)
        else:
            tmp = self.run.path / f".{name}.tmp"
            try:
                pq.write_table(table, tmp)
                os.replace(tmp, final)
            except OSError as e:  # a full or vanished disk: the finished files stand, these groups rerun on resume
                tmp.unlink(missing_ok=True)
                raise _unwritten(final, e, "disk") from None
        self._next_index += 1
        self._buffer.clear()
        self._buffered_rows = 0
        self._first_buffered_at = None
        self.files_written.append(final)
        self.rows_written += table.num_rows
        return final

    def _put(self, table: pa.Table, final: str) -> None:
        """The whole file built in memory, then one upload: a crash mid-way leaves no object at all."""
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf)
        try:
            self.run.write_bytes(final, buf.getvalue().to_pybytes())
        except OSError as e:
            raise _unwritten(final, e, "storage") from None

    def close(self) -> None:
        self.flush()


def _unwritten(final, e: OSError, what: str) -> RunDirError:
    cause = e.strerror or " ".join(str(e).split())
    return RunDirError(f"{final}: cannot write rollouts: {cause}; the files already there are complete: fix the "
                       f"{what}, then --resume runs the missing groups")


def done_groups(output_dir: str | Path | RunDir) -> dict[tuple[str, str], str]:
    """(env, task_id) -> group_id of every group already written; refuses incomplete groups or duplicates.
    A group of tree rollouts may hold fewer rows than its size (a node that ended early is one leaf)."""
    table = read_rollout_table(
        output_dir, ["group_id", "env", "task_id", "rollout_index", "group_size", "segment_index", "tree_id"]
    )
    done: dict[tuple[str, str], str] = {}
    members: Counter[str] = Counter()
    size: dict[str, int] = {}
    trees: set[str] = set()
    for row in table.to_pylist():
        if row["segment_index"] != 0:
            continue
        gid = row["group_id"]
        done[(row["env"], row["task_id"])] = gid
        members[gid] += 1
        size[gid] = row["group_size"]
        if row["tree_id"]:
            trees.add(gid)
    bad = [gid for gid, n in members.items() if n > size[gid] or (n != size[gid] and gid not in trees)]
    if bad:
        raise ResumeError(
            f"{output_dir}: group {bad[0]} has {members[bad[0]]} rollouts of {size[bad[0]]} "
            f"({len(bad)} such groups); files are written whole, so this directory holds rows of another run"
        )
    return done
