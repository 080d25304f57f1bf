"""Where a run directory lives: a local path (unchanged behaviour) or an object-store URI (`s3://bucket/prefix`,
`gs://...`), reached through pyarrow's filesystems (`pyarrow.fs.FileSystem.from_uri`), so every node of a
cluster, and the trainer, reads the same rows.

S3 endpoint and credentials come from the usual AWS variables (`AWS_ENDPOINT_URL` for MinIO / moto / other
S3-compatible stores, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_DEFAULT_REGION`). On an object store
a file is one PUT: it appears whole or not at all, which is what the temp-name-then-rename of the local
sink gives on a disk.
"""

from __future__ import annotations

from pathlib import Path

RunDir = str | Path


def is_uri(d: RunDir) -> bool:
    """An object-store URI (`scheme://...`); `file://` and plain paths are local."""
    return isinstance(d, str) and "://" in d and not d.startswith("file://")


def run_dir(d: RunDir) -> RunDir:
    """The run directory as the code carries it: a Path when local, the URI string (no trailing /) else."""
    return d.rstrip("/") if is_uri(d) else Path(d)


def join(d: RunDir, *names: str) -> RunDir:
    if is_uri(d):
        return "/".join([str(d).rstrip("/"), *names])
    return Path(d).joinpath(*names)


def filesystem(uri: str):
    """(pyarrow filesystem, path inside it) of a URI; a bad one is a one-line error naming the option."""
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except (ValueError, OSError) as e:
        raise ValueError(f"collect.output_dir {uri}: not a storage URI pyarrow can open: {e}") from None


def name_of(p: RunDir) -> str:
    return str(p).rstrip("/").rsplit("/", 1)[-1]


def list_names(d: RunDir) -> list[str]:
    """Names of the files directly in `d` (none when it does not exist)."""
    if not is_uri(d):
        p = Path(d)
        return [c.name for c in p.iterdir()] if p.is_dir() else []
    import pyarrow.fs as pafs

    fs, path = filesystem(str(d))
    infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    return [i.base_name for i in infos if i.type == pafs.FileType.File]


def is_file(p: RunDir) -> bool:
    if not is_uri(p):
        return Path(p).is_file()
    import pyarrow.fs as pafs

    fs, path = filesystem(str(p))
    return fs.get_file_info(path).type == pafs.FileType.File


def read_bytes(p: RunDir) -> bytes:
    if not is_uri(p):
        return Path(p).read_bytes()
    fs, path = filesystem(str(p))
    with fs.open_input_stream(path) as f:
        return f.read()


def write_bytes(p: RunDir, data: bytes) -> None:
    """One object written whole (a single upload) on a store; the caller makes local writes atomic."""
    fs, path = filesystem(str(p))
    with fs.open_output_stream(path) as f:
        f.write(data)


def delete(p: RunDir) -> None:
    fs, path = filesystem(str(p))
    fs.delete_file(path)


def parquet_source(p: RunDir):
    """(what `pq.read_table` takes, filesystem or None) for a part file."""
    if not is_uri(p):
        return p, None
    fs, path = filesystem(str(p))
    return path, fs
