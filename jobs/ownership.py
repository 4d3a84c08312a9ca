"""Who may write an output folder: the job's own file names, the claim, and the checks before work.

An output belongs to one run. The run claims it before any work by creating ``_claim.json``
with a conditional create (``jobs.storage.create_exclusive``): of two runs started together,
exactly one creates the claim. A run whose fingerprint (inputs, step, settings, code version,
run id) matches the claim's continues, so the same command started twice, or rerun after a
crash, resumes the same run; any other run is refused before it writes anything.

The job deletes only files it can prove it wrote for this run: the temporary files
(``*.tmp-<uuid>``) of its own shards, whose names hash the run's fingerprint. Anything in the
output that does not carry one of the job's own names is somebody else's: the run is refused
unless ``--allow-foreign-files`` is given, and even then those files are never read or deleted.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from jobs.storage import (
    Location,
    StorageError,
    create_exclusive,
    delete,
    exists,
    glob_base,
    list_tree,
    read_bytes,
    write_atomic,
)

__all__ = [
    "CLAIM",
    "Claim",
    "OutputRefused",
    "OutputState",
    "check_output",
    "check_writable",
    "claim_output",
    "inspect_output",
    "is_own_file",
    "lies_within",
    "overlapping",
    "remove_own_leftovers",
]

CLAIM = "_claim.json"
_HEX24, _TMP = r"[0-9a-f]{24}", r"(?:\.tmp-(?:[0-9a-f]{16})?[0-9a-f]{32})?"
# Every name the job and its tools (export, report) write under an output folder.
_OWN_FILE = re.compile(
    rf"(?:_manifest\.json|{CLAIM.replace('.', '[.]')}|_probe-[0-9a-f]{{32}}"
    rf"|_shards/{_HEX24}\.json|(?:crops|lineage|errors)/part-{_HEX24}\.parquet"
    rf"|_index/[0-9a-f]{{16}}-{_HEX24}\.parquet"
    rf"|_work/[0-9a-f]{{16}}/(?:_paired\.json|units/unit-\d+\.parquet)"
    rf"|webdataset/shard-\d{{6}}\.tar|openlineage/events\.jsonl"
    rf"|report/(?:contact_sheet\.png|index\.html)"
    rf"|(?:webdataset|openlineage|report)/_written\.json){_TMP}"
)
_SHOWN = 3  # foreign names quoted in a refusal


class OutputRefused(ValueError):
    """The output may not be written by this run (one line: what is there, what to do)."""


def is_own_file(relative: str) -> bool:
    """Whether a path relative to an output folder is a name the job or its tools write."""
    return _OWN_FILE.fullmatch(relative) is not None


@dataclass(frozen=True)
class Claim:
    """The run that owns an output. ``created_at`` is the run's time: every attempt of the run
    writes it into lineage, so attempts (and concurrent starts of the same run) agree."""

    run_id: str
    fingerprint: str
    created_at: str
    settings: dict

    def to_json(self) -> bytes:
        return json.dumps(self.__dict__, sort_keys=True, indent=1).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Claim:
        value = json.loads(data)
        if not isinstance(value, dict):
            raise TypeError(f"a JSON {type(value).__name__}, not an object")
        return cls(str(value["run_id"]), str(value["fingerprint"]), str(value["created_at"]),
                   dict(value.get("settings") or {}))


@dataclass(frozen=True)
class OutputState:
    """What an output folder holds, as far as the job is concerned."""

    claim: Claim | None
    manifest: dict | None
    foreign: tuple[str, ...]  # files the job did not write (relative paths)
    own_data: int  # files with the job's names, other than a claim being made or a probe


def inspect_output(output: Location) -> OutputState:
    """Read the output's claim and manifest (if any). The folder is listed, to find files the
    job did not write, only when no run has claimed it: a claimed output's owner is settled by
    its claim, and listing an output of millions of shards on the driver would cost more than
    any check is worth (the job never deletes a file it did not write either way)."""
    claim = manifest = None
    claim_location = output.child(CLAIM)
    if exists(claim_location):
        try:
            claim = Claim.from_json(read_bytes(claim_location))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise OutputRefused(f"{output.url}/{CLAIM} is not a claim this job wrote "
                                f"({type(error).__name__}); choose a new --output") from None
    if exists(output.child("_manifest.json")):
        try:
            manifest = json.loads(read_bytes(output.child("_manifest.json")))
        except ValueError:
            raise OutputRefused(f"{output.url}/_manifest.json is not valid JSON; choose a new "
                                f"--output") from None
        if not isinstance(manifest, dict):
            raise OutputRefused(f"{output.url}/_manifest.json is not a manifest this job wrote "
                                f"(a JSON {type(manifest).__name__}); choose a new --output")
        if not {"run_id", "fingerprint"} <= manifest.keys():
            raise OutputRefused(f"{output.url}/_manifest.json is not a manifest this job wrote "
                                f"(it has no run_id and fingerprint); choose a new --output")
    if claim is not None:
        return OutputState(claim, manifest, (), 0)
    files = list_tree(output)
    foreign = tuple(f for f in files if not is_own_file(f))
    # A concurrent run's claim in the making (its temporary file) and its writable probe are
    # not data: they must not make this run think an unclaimed run left files here.
    own_data = sum(is_own_file(f) and not f.startswith((CLAIM, "_probe-")) for f in files)
    return OutputState(claim, manifest, foreign, own_data)


def check_output(output: Location, state: OutputState, *, run_id: str, fingerprint: str,
                 settings: dict, allow_foreign: bool, describe=None) -> None:
    """Refuse an output that another run owns, or that holds files the job did not write."""
    owner = state.claim or (_legacy_claim(state.manifest) if state.manifest else None)
    if owner is not None and owner.fingerprint != fingerprint:
        status = ("committed" if state.manifest
                  else "claimed (running, or stopped before its commit)")
        difference = describe(owner.settings, settings) if describe and owner.settings else ""
        if not difference and owner.run_id != run_id:
            difference = f"run id ({owner.run_id} there, {run_id} here)"
        release = "" if state.manifest else (
            f". If that run is stopped for good, delete {output.url}/{CLAIM} to release the "
            f"output: its committed shards stay, and a run of other settings refuses them as "
            f"another run's files")
        raise OutputRefused(
            f"{output.url} belongs to run {owner.run_id}, {status}, with other "
            f"{difference or 'inputs, step, settings or code version'}; "
            f"write to a new --output (nothing was changed){release}")
    if owner is None and state.own_data and not allow_foreign:
        raise OutputRefused(
            f"{output.url} holds {state.own_data} files named as this job's outputs (crops, "
            f"markers, exports) but no {CLAIM}: a run's files whose claim is gone, or someone's "
            f"files under the job's names; write to a new --output (nothing was changed)")
    if state.foreign and not allow_foreign:
        shown = ", ".join(state.foreign[:_SHOWN])
        more = f" and {len(state.foreign) - _SHOWN} more" if len(state.foreign) > _SHOWN else ""
        raise OutputRefused(
            f"{output.url} holds files this job did not write ({shown}{more}); use an empty "
            f"or new --output, or pass --allow-foreign-files to write beside them (they are "
            f"never read or deleted)")


def check_writable(output: Location, leave_no_folder: bool = False) -> None:
    """Write and delete a probe object: a read-only or unreachable output fails here, before
    any work, with the storage layer's one-line error. ``leave_no_folder`` (``validate``, which
    does no work) also removes the empty local folders the probe made; a run keeps them, since
    a concurrent run may be creating its claim in them."""
    made = []
    if output.is_local and leave_no_folder:
        folder = os.path.abspath(output.path)
        while not os.path.exists(folder):
            made.append(folder)
            folder = os.path.dirname(folder)
    probe = output.child(f"_probe-{uuid.uuid4().hex}")
    write_atomic(probe, b"")
    delete(probe)
    for folder in made:  # innermost first; a folder that something else filled meanwhile stays
        try:
            os.rmdir(folder)
        except OSError:
            break


def claim_output(output: Location, *, run_id: str, fingerprint: str, settings: dict) -> Claim:
    """Create the claim, or join it when it is this run's; ``OutputRefused`` when another run
    created it first (also the loser of a race between two runs started together)."""
    mine = Claim(run_id, fingerprint, datetime.now(UTC).isoformat(), settings)
    location = output.child(CLAIM)
    if create_exclusive(location, mine.to_json()):
        return mine
    try:
        existing = Claim.from_json(read_bytes(location))
    except (StorageError, ValueError, KeyError, TypeError):
        raise OutputRefused(f"{location.url} exists but cannot be read as a claim; write to a "
                            f"new --output (nothing was changed)") from None
    if existing.fingerprint != fingerprint:
        raise OutputRefused(f"{output.url} was claimed by run {existing.run_id} (other inputs, "
                            f"step, settings or code version) while this run started; write to "
                            f"a new --output (nothing was changed)")
    return existing


def _legacy_claim(manifest: dict) -> Claim:
    """Outputs committed before claims existed: the manifest names the owner."""
    settings = manifest.get("settings")
    return Claim(str(manifest.get("run_id")), str(manifest.get("fingerprint")),
                 "", dict(settings) if isinstance(settings, dict) else {})


def overlapping(source: Location, output: Location) -> bool:
    """Whether an input (a file, folder or glob pattern) and the output folder on the same
    store are the same place or one holds the other (paths compared after resolution: symlinks
    and ``..`` on local disks; a pattern by the folder it searches)."""
    if type(source.fs) is not type(output.fs):
        return False
    x, y = _comparable(source, glob_base(source)), _comparable(output, None)
    return _within(x, y) or _within(y, x)


def lies_within(location: Location, container: Location) -> bool:
    """Whether ``location`` is ``container`` (a file, folder or glob pattern) or lies under it
    (compared as ``overlapping`` compares)."""
    if type(location.fs) is not type(container.fs):
        return False
    return _within(_comparable(location, None), _comparable(container, glob_base(container)))


def _within(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or lies under it (``/`` holds every local path)."""
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _comparable(location: Location, base: str | None) -> str:
    path = location.path if base is None else (base or "/")
    if location.is_local:
        return os.path.realpath(path)
    return "/".join(p for p in path.split("/") if p not in ("", "."))


def remove_own_leftovers(output: Location, fingerprint: str, num_units: int = 0,
                         work_only: bool = False) -> int:
    """Delete what failed attempts of this run left behind: temporary files whose name carries
    the run's fingerprint prefix, and the files of the run's work area (``_work/<prefix>/``):
    its ``_paired.json`` and the work files of its ``num_units`` units. ``work_only`` lists the
    work area alone (a committed output's shards are not listed again). Returns how many files
    were deleted; nothing else is touched, whatever its name."""
    tag = re.escape(fingerprint[:16])
    removed = 0
    work_files = {"_paired.json", *(f"units/unit-{n}.parquet" for n in range(num_units))}
    # Temporary files exist only on local disks (object stores publish whole objects), so an
    # object store's output is not listed, only this run's work area.
    work = f"_work/{fingerprint[:16]}/"
    candidates = list_tree(output) if output.is_local and not work_only else [
        work + relative for relative in list_tree(output.child(work.rstrip("/")))]
    for relative in candidates:
        ours = re.fullmatch(rf".+\.tmp-{tag}[0-9a-f]{{32}}", relative) \
            or relative.startswith(work) and relative[len(work):] in work_files
        if ours and is_own_file(relative):
            delete(output.child(relative))
            removed += 1
    # local disks keep the emptied folders of the work area: remove them when nothing is left
    for folder in (output.child("_work", fingerprint[:16]), output.child("_work")):
        if folder.is_local and os.path.isdir(folder.path) and not list_tree(folder):
            shutil.rmtree(folder.path, ignore_errors=True)
    return removed
