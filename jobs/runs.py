"""Reading a committed run: the output folder as its ``_manifest.json`` describes it.

``jobs.sinks`` writes a run (shards, markers, the manifest); this module reads one back for the
``export`` and ``report`` commands. It reads only the files the manifest lists, so files of a
crashed attempt, or foreign files in the folder, are never read. The Hugging Face feature
metadata that the written crops tables carry is defined here too, beside the reader.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pyarrow as pa

from jobs import schema, sinks
from jobs.sinks import KINDS, read_manifest
from jobs.storage import (
    Location,
    MissingObjectError,
    delete,
    list_tree,
    open_parquet,
    read_bytes,
    read_parquet,
    resolve,
    write_atomic,
)

__all__ = [
    "HF_METADATA_KEY",
    "CommittedRun",
    "RunError",
    "hf_features_metadata",
    "open_run",
    "tool_files",
    "with_hf_features",
]

HF_METADATA_KEY = b"huggingface"


class RunError(ValueError):
    """The folder is not a committed run, or the run cannot be used as asked (one clear line,
    no traceback)."""


def hf_features_metadata(arrow_schema: pa.Schema) -> dict[bytes, bytes]:
    """Schema metadata that makes Hugging Face ``datasets`` decode the crops with no cast:
    ``{b"huggingface": {"info": {"features": {"crop": {"_type": "Image"}}}}}`` when ``crop`` is
    the ``struct<bytes, path>`` image column. ``datasets`` takes each column's feature from this
    metadata when its Arrow type matches, and derives the others from their Arrow types, so only
    the image column is named. Empty for other crop types: ``--format npy`` crops
    (``schema.npy_crop_type``, fixed-size lists) load as a fixed-length float32 ``List`` from
    their Arrow type alone. (An ``Array3D`` entry here would be ignored: ``datasets`` only takes
    it for a column stored as its own ``Array3DExtensionType``.)

    >>> hf_features_metadata(pa.schema([("crop", schema.HF_IMAGE_TYPE)]))
    {b'huggingface': b'{"info":{"features":{"crop":{"_type":"Image"}}}}'}
    >>> hf_features_metadata(pa.schema([("crop", pa.binary())]))
    {}
    """
    if "crop" not in arrow_schema.names or arrow_schema.field("crop").type != schema.HF_IMAGE_TYPE:
        return {}
    features = {"crop": {"_type": "Image"}}
    return {HF_METADATA_KEY: json.dumps({"info": {"features": features}},
                                        separators=(",", ":")).encode()}


def with_hf_features(table: pa.Table) -> pa.Table:
    """``table`` with ``hf_features_metadata`` merged into its schema metadata (the table itself
    when there is nothing to add)."""
    extra = hf_features_metadata(table.schema)
    if not extra:
        return table
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})


@dataclass(frozen=True)
class CommittedRun:
    """A committed run's output folder and its manifest; reads only the files the manifest lists.

    ``files(kind)`` gives ``(shard, file entry)`` pairs in shard order, where a file entry is the
    manifest's ``{"kind", "path", "rows", "bytes", "sha256"}``. ``shards`` are the committed
    shards (``shard``, ``files``, ``counts``): listed inline in older manifests, else read from
    the shard index the manifest names.
    """

    output: Location
    manifest: dict
    shards: tuple = field(default=(), repr=False)

    def files(self, kind: str) -> list[tuple[str, dict]]:
        """``(shard, file entry)`` of every committed file of ``kind`` (``crops``, ``lineage``
        or ``errors``), in shard order."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        return [(shard["shard"], entry) for shard in self.shards
                for entry in shard.get("files", []) if entry.get("kind") == kind]

    def location(self, entry: dict) -> Location:
        """Where a manifest file entry's file is."""
        return self.output.child(entry["path"])

    def read(self, entry: dict, columns: list[str] | None = None, filters=None) -> pa.Table:
        """One committed file as a table (only ``columns`` and the rows matching ``filters``,
        when given); ``StorageError`` when it cannot be read."""
        return read_parquet(self.location(entry), columns=columns, filters=filters)

    def read_schema(self, entry: dict) -> pa.Schema:
        """One committed file's Arrow schema, read from its footer."""
        return open_parquet(self.location(entry)).schema_arrow

    def read_all(self, kind: str, columns: list[str] | None = None) -> pa.Table | None:
        """Every committed file of ``kind`` concatenated, or ``None`` when there is none."""
        tables = []
        for _, entry in self.files(kind):
            wanted = columns
            if columns is not None:
                names = set(self.read_schema(entry).names)
                wanted = [c for c in columns if c in names]
            tables.append(self.read(entry, wanted))
        if not tables:
            return None
        return pa.concat_tables(tables, promote_options="permissive")


def open_run(output_url: str) -> CommittedRun:
    """The committed run at ``output_url``; ``RunError`` when it holds no committed
    ``_manifest.json``."""
    output = resolve(output_url)
    manifest = read_manifest(output)
    if manifest is None:
        raise RunError(f"expected a committed run in {output.url}, but it has no "
                       f"_manifest.json (wrong folder, or the run has not finished)")
    if manifest.get("status") != "committed" or not ("shards" in manifest or "index" in manifest):
        raise RunError(f"expected a committed manifest in {output.url}, got status "
                       f"{manifest.get('status')!r}")
    return CommittedRun(output, manifest, _committed_shards(output, manifest))


def _committed_shards(output: Location, manifest: dict) -> tuple:
    if "shards" in manifest:
        return tuple(manifest["shards"])
    # the Parquet shard index beside the manifest (jobs.sinks writes and reads it)
    return tuple(sinks.read_shard_index(output, manifest))


# -- files the tools (export, report) write into a run's output ---------------------------------
#: In each tool's folder (``webdataset/``, ``report/``, ``openlineage/``): the files it wrote.
TOOL_RECORD = "_written.json"
_TEMPORARY = re.compile(r"(.+)\.tmp-(?:[0-9a-f]{16})?[0-9a-f]{32}")  # write_atomic's siblings


@contextmanager
def tool_files(output: Location, folder: str, names: Iterable[str]) -> Iterator[Location]:
    """Write the files ``names`` into ``folder`` of a run's output (the block writes them; the
    folder's location is yielded), replacing and deleting only files the tool wrote before.

    The folder's ``_written.json`` lists what the tool wrote. A file there that it does not
    list (someone's own, in an output run with ``--allow-foreign-files``) is a ``RunError``
    before anything is written. The record lists the new names before the block writes them,
    so a crash leaves only listed files; after the block, the files listed before and not
    written now are deleted, and the record lists ``names`` (plus whatever a concurrent run of
    the tool listed meanwhile).
    """
    location = output.child(folder)
    record = location.child(TOOL_RECORD)
    previous = set(_recorded(record))
    present = set(list_tree(location)) - {TOOL_RECORD}
    # a listed file, or a temporary of one (or of the record) that a crash left behind
    temporaries_of = previous | {TOOL_RECORD}
    ours = {name for name in present if name in previous
            or ((match := _TEMPORARY.fullmatch(name)) and match.group(1) in temporaries_of)}
    foreign = sorted(present - ours)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3
                                          else "")
        raise RunError(f"{location.url} holds files that no earlier {folder} of this tool "
                       f"recorded in {TOOL_RECORD} ({shown}); nothing was written: move them "
                       f"away (a {folder} written by a version that kept no record can be "
                       f"deleted and written again)")
    names = sorted(set(names))
    write_atomic(record, _record_bytes(previous | set(names)))
    yield location
    stale = ours - set(names)
    for name in sorted(stale):
        delete(location.child(name))
    # Read the record again: a concurrent run of the tool may have listed files meanwhile,
    # which must stay listed (a listed file that is gone is harmless; an unlisted one would
    # make every later run refuse the folder).
    write_atomic(record, _record_bytes((set(_recorded(record)) | set(names)) - stale))


def _recorded(record: Location) -> list[str]:
    try:
        data = read_bytes(record)
    except MissingObjectError:  # no record: the tool wrote nothing here before
        return []
    try:
        files = json.loads(data)["files"]
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        raise RunError(f"{record.url} is not a record this job's tools wrote; move it "
                       f"away") from None
    return files


def _record_bytes(names: Iterable[str]) -> bytes:
    return json.dumps({"files": sorted(names)}, indent=1).encode()
