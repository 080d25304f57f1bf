"""Parquet sink: complete groups in, rolled files out, each appearing atomically (temp name, then rename).

Readers (`ray.data.read_parquet`, pyarrow datasets) skip names starting with "." so a file being written is
never seen half-done; on an object store (`s3://...`, storage.py) a file is one upload, which appears whole
or not at all. Every file holds whole groups only, which is what makes resume exact: a group is
either in a finished file or it is not done.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from gym_ray.collect import storage
from gym_ray.collect.runlock import RunDirError
from gym_ray.types import ROLLOUT_SCHEMA, Rollout

_PART = re.compile(r"^part-(\d+)-[0-9a-f]+\.parquet$")


class ResumeError(ValueError):
    """The output directory does not fit the run (e.g. an incomplete group in a finished file)."""


class RunInputError(ValueError):
    """A directory that cannot be read as a run: no part files, or a part that is not rollout rows (not
    Parquet, cut short, another schema, a null where a row needs a value)."""


def part_files(output_dir: str | Path) -> list[Path]:
    """Finished part files, in write order (URI strings for a run directory on an object store)."""
    if storage.is_uri(output_dir):
        found = [(int(m.group(1)), n) for n in storage.list_names(output_dir) if (m := _PART.match(n))]
        return [storage.join(output_dir, n) for _, n in sorted(found)]
    d = Path(output_dir)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _PART.match(p.name))]
    return [p for _, p in sorted(found)]


class ParquetSink:
    """Buffers Arrow tables of complete groups; rolls a file every `rows_per_file` rows or `roll_seconds`."""

    def __init__(self, output_dir: str | Path, rows_per_file: int = 512, roll_seconds: float = 30.0):
        self.output_dir = storage.run_dir(output_dir)
        if not storage.is_uri(self.output_dir):
            self.output_dir.mkdir(parents=True, exist_ok=True)
        self.rows_per_file = rows_per_file
        self.roll_seconds = roll_seconds
        existing = part_files(self.output_dir)
        self._next_index = int(_PART.match(storage.name_of(existing[-1])).group(1)) + 1 if existing else 0
        self._buffer: list[pa.Table] = []
        self._buffered_rows = 0
        self._first_buffered_at: float | None = None
        self.files_written: list[Path] = []
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

    def flush(self) -> Path | None:
        if not self._buffer:
            return None
        table = pa.concat_tables(self._buffer)
        name = f"part-{self._next_index:06d}-{uuid.uuid4().hex[:8]}.parquet"
        final = storage.join(self.output_dir, name)
        if storage.is_uri(self.output_dir):
            self._put(table, final)
        else:
            tmp = self.output_dir / f".{name}.tmp"
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

    @staticmethod
    def _put(table: pa.Table, final: str) -> None:
        """The whole file built in memory, then one upload: a crash mid-way leaves no object at all."""
        buf = pa.BufferOutputStream()
        pq.write_table(table, buf)
        try:
            storage.write_bytes(final, buf.getvalue().to_pybytes())
        except OSError as e:
            raise _unwritten(final, e, "storage") from None

    def close(self) -> None:
        self.flush()


def _unwritten(final, e: OSError, what: str) -> RunDirError:
    cause = e.strerror or " ".join(str(e).split())
    return RunDirError(f"{final}: cannot write rollouts: {cause}; the files already there are complete: fix the "
                       f"{what}, then --resume runs the missing groups")


def read_rollout_table(output_dir: str | Path, columns: list[str] | None = None) -> pa.Table:
    """All finished rows of a run directory (empty table with the schema when there are none); a part that
    is not rollout rows raises `RunInputError` naming the file and what is wrong with it."""
    files = part_files(output_dir)
    schema = ROLLOUT_SCHEMA if columns is None else pa.schema([ROLLOUT_SCHEMA.field(c) for c in columns])
    if not files:
        return schema.empty_table()
    return pa.concat_tables([read_part(f, schema) for f in files])


def read_run(run_dir: str | Path, columns: list[str] | None = None) -> pa.Table:
    """The rows of a finished run for the commands that look at one (check, report, compare, metrics): a
    directory with no part files is refused like an unreadable part, in one line."""
    if not part_files(run_dir):
        raise RunInputError(f"{run_dir}: no rollout files (part-*.parquet) found")
    return read_rollout_table(run_dir, columns)


# columns a row may leave empty (the failure record of an ok row); every other null is a broken file
_NULLABLE = {n for n, f in Rollout.model_fields.items() if f.default is None}


def read_part(path, schema: pa.Schema) -> pa.Table:
    """One part file as `schema` (the rollout schema's columns; other types cast when every value fits)."""
    source, fs = storage.parquet_source(path)
    try:
        found = pq.read_schema(source, filesystem=fs)
        missing = [n for n in schema.names if n not in found.names]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise RunInputError(f"{path}: not rollout rows: no column {', '.join(missing[:3])}{more}")
        table = pq.read_table(source, columns=schema.names, filesystem=fs)
    except (OSError, pa.ArrowException) as e:
        raise RunInputError(f"{path}: not a readable Parquet file ({_reason(e)})") from None
    for i, field in enumerate(schema):
        column = table.column(i)
        if column.type != field.type:
            try:
                column = column.cast(field.type)
            except pa.ArrowException as e:
                raise RunInputError(f"{path}: column {field.name} is {column.type}, not {field.type} "
                                    f"({_reason(e)})") from None
            table = table.set_column(i, field, column)
        if column.null_count and field.name not in _NULLABLE:
            row = column.is_null().index(True).as_py()
            raise RunInputError(f"{path}: row {row}: {field.name} is null")
    return table


def _reason(e: BaseException) -> str:
    return (e.strerror if isinstance(e, OSError) and e.strerror else " ".join(str(e).split())[:200]) or type(e).__name__


def done_groups(output_dir: str | Path) -> dict[tuple[str, str], str]:
    """(env, task_id) -> group_id of every group already written; refuses incomplete groups or duplicates."""
    table = read_rollout_table(
        output_dir, ["group_id", "env", "task_id", "rollout_index", "group_size", "segment_index"]
    )
    done: dict[tuple[str, str], str] = {}
    members: Counter[str] = Counter()
    size: dict[str, int] = {}
    for row in table.to_pylist():
        if row["segment_index"] != 0:
            continue
        gid = row["group_id"]
        done[(row["env"], row["task_id"])] = gid
        members[gid] += 1
        size[gid] = row["group_size"]
    bad = [gid for gid, n in members.items() if n != size[gid]]
    if bad:
        raise ResumeError(
            f"{output_dir}: group {bad[0]} has {members[bad[0]]} rollouts of {size[bad[0]]} "
            f"({len(bad)} such groups); files are written whole, so this directory holds rows of another run"
        )
    return done
