"""Reading a run directory's rows: every part file goes through `read_part`, which names the file and what is
wrong with it (not Parquet, cut short, another schema, a null where a row needs a value)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from gym_ray.rundir.location import Location, RunDir
from gym_ray.types import ROLLOUT_SCHEMA, Rollout


class RunInputError(ValueError):
    """A directory that cannot be read as a run: no part files, or a part that is not rollout rows (not
    Parquet, cut short, another schema, a null where a row needs a value)."""


def part_files(run_dir: str | Path | RunDir) -> list[Location]:
    """Finished part files, in write order (URI strings for a run directory on an object store)."""
    return RunDir.of(run_dir).parts()


def read_rollout_table(run_dir: str | Path | RunDir, columns: list[str] | None = None) -> pa.Table:
    """All finished rows of a run directory (empty table with the schema when there are none); a part that
    is not rollout rows raises `RunInputError` naming the file and what is wrong with it."""
    run = RunDir.of(run_dir)
    files = run.parts()
    schema = ROLLOUT_SCHEMA if columns is None else pa.schema([ROLLOUT_SCHEMA.field(c) for c in columns])
    if not files:
        return schema.empty_table()
    return pa.concat_tables([read_part(run, f, schema) for f in files])


def read_run(run_dir: str | Path | RunDir, columns: list[str] | None = None) -> pa.Table:
    """The rows of a finished run for the commands that look at one (check, report, compare, metrics): a
    directory with no part files is refused like an unreadable part, in one line."""
    run = RunDir.of(run_dir)
    if not run.parts():
        raise RunInputError(f"{run}: no rollout files (part-*.parquet) found")
    return read_rollout_table(run, columns)


# columns a row may leave empty (the failure record of an ok row); every other null is a broken file
_NULLABLE = {n for n, f in Rollout.model_fields.items() if f.default is None}
# columns added after rows were first written (tree rollouts, tool records, re-verification), with the value an
# older row means
_LATER = {n: Rollout.model_fields[n].default for n in ("tree_id", "node_id", "parent_node_id", "branch_token_offset",
                                                       "tool_calls_json", "previous_reward", "verifier")}
_LATER["cost"] = Rollout.model_fields["cost"].get_default(call_default_factory=True).model_dump()  # all zero


def read_part(run: RunDir, path: Location, schema: pa.Schema) -> pa.Table:
    """One part file of `run` as `schema` (the rollout schema's columns; other types cast when every value
    fits)."""
    source, fs = run.parquet_source(path)
    try:
        found = pq.read_schema(source, filesystem=fs)
        missing = [n for n in schema.names if n not in found.names and n not in _LATER]
        if missing:
            more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            raise RunInputError(f"{path}: not rollout rows: no column {', '.join(missing[:3])}{more}")
        table = pq.read_table(source, columns=[n for n in schema.names if n in found.names], filesystem=fs)
    except (OSError, pa.ArrowException) as e:
        raise RunInputError(f"{path}: not a readable Parquet file ({_reason(e)})") from None
    for i, field in enumerate(schema):  # a run written before a column existed: the column's default
        if field.name not in found.names:
            table = table.add_column(i, field, pa.repeat(pa.scalar(_LATER[field.name], field.type), table.num_rows))
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
