"""jobs/ownership.py: the job's own names, the claim, overlap of inputs and output (no Ray)."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys

import pyarrow.fs as pafs
import pytest

from jobs import ownership
from jobs.ownership import Claim, OutputRefused
from jobs.storage import Location, resolve

SHARD = "0123456789abcdef01234567"
TMP = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "relative, own",
    [
        # the commit point and the claim
        ("_manifest.json", True),
        ("_claim.json", True),
        # a shard's marker, its data files, and their temporary files
        (f"_shards/{SHARD}.json", True),
        (f"crops/part-{SHARD}.parquet", True),
        (f"lineage/part-{SHARD}.parquet.tmp-{TMP}", True),
        (f"errors/part-{SHARD}.parquet", True),
        # what export and report write beside a run
        ("webdataset/shard-000001.tar", True),
        ("openlineage/events.jsonl", True),
        ("report/index.html", True),
        # a user's files in the job's folders
        ("crops/my-photo.jpg", False),
        ("crops/sub/deep.parquet", False),
        ("errors/today.log", False),
        # near misses of the job's names
        ("crops/part-0.parquet", False),
        (f"crops/part-{SHARD}.parquet.bak", False),
        (f"crops/part-{SHARD.upper()}.parquet", False),
        ("_manifest.json.old", False),
        # empty name
        ("", False),
    ],
)
def test_own_file_names(relative, own):
    assert ownership.is_own_file(relative) is own


def local(path) -> Location:
    return resolve(str(path))


def claim_for(fingerprint: str) -> dict:
    return {"run_id": "run-x", "fingerprint": fingerprint, "settings": {"step": "s"}}


def test_an_output_with_other_files_is_refused_naming_them(tmp_path):
    for name in ("crops/my-photo.jpg", "crops/sub/deep.parquet", "errors/today.log", "z.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("user data")
    state = ownership.inspect_output(local(tmp_path))
    with pytest.raises(OutputRefused, match=r"holds files this job did not write \(crops/my-"
                                            r"photo.jpg, crops/sub/deep.parquet, errors/today.log"
                                            r" and 1 more\).*--allow-foreign-files"):
        ownership.check_output(local(tmp_path), state, allow_foreign=False, **claim_for("f"))
    # allowed explicitly: no refusal, and the files are still there
    ownership.check_output(local(tmp_path), state, allow_foreign=True, **claim_for("f"))
    assert (tmp_path / "crops/my-photo.jpg").read_text() == "user data"


def test_an_output_claimed_by_another_run_is_refused_saying_what_differs(tmp_path):
    output = local(tmp_path)
    ownership.claim_output(output, run_id="run-a", fingerprint="a",
                           settings={"step": "s1", "inputs": "i", "code_version": "v"})
    state = ownership.inspect_output(output)
    assert state.claim.run_id == "run-a" and state.foreign == ()

    def describe(old, new):
        return "step" if old["step"] != new["step"] else ""

    with pytest.raises(OutputRefused, match=r"belongs to run run-a, claimed .* with other step; "
                                            r"write to a new --output \(nothing was changed\)\. "
                                            r"If that run is stopped for good, delete "
                                            r".*/_claim\.json to release the output"):
        ownership.check_output(output, state, run_id="run-b", fingerprint="b",
                               settings={"step": "s2", "inputs": "i", "code_version": "v"},
                               allow_foreign=False, describe=describe)
    # a run that differs only in its id is told so
    with pytest.raises(OutputRefused, match=r"with other run id \(run-a there, run-c here\)"):
        ownership.check_output(output, state, run_id="run-c", fingerprint="c",
                               settings={"step": "s1", "inputs": "i", "code_version": "v"},
                               allow_foreign=False, describe=describe)
    # the same run passes
    ownership.check_output(output, state, run_id="run-a", fingerprint="a",
                           settings={}, allow_foreign=False)


def test_unclaimed_crop_files_are_not_adopted(tmp_path):
    (tmp_path / "crops").mkdir()
    (tmp_path / "crops" / f"part-{SHARD}.parquet").write_bytes(b"PAR1")
    state = ownership.inspect_output(local(tmp_path))
    with pytest.raises(OutputRefused, match=r"holds 1 files named as this job's outputs .* but "
                                            r"no _claim\.json"):
        ownership.check_output(local(tmp_path), state, allow_foreign=False, **claim_for("f"))


@pytest.mark.parametrize("document", ['{"version": 3, "files": ["a.bin"]}', '{"run_id": "x"}'])
def test_another_tools_manifest_is_refused_as_not_ours(tmp_path, document):
    (tmp_path / "_manifest.json").write_text(document)
    with pytest.raises(OutputRefused, match=r"_manifest\.json is not a manifest this job wrote "
                                            r"\(it has no run_id and fingerprint\)"):
        ownership.inspect_output(local(tmp_path))  # it said "belongs to run None"


def test_a_read_only_filesystem_fails_the_writable_check_in_one_line():
    with pytest.raises(OSError, match=r"^cannot write http://127\.0\.0\.1:9/out/_probe-\w+: "
                                      r"the http filesystem is read-only$"):
        ownership.check_writable(resolve("http://127.0.0.1:9/out"))


def test_a_claim_that_is_not_json_is_refused(tmp_path):
    (tmp_path / "_claim.json").write_text("not json")
    with pytest.raises(OutputRefused, match=r"is not a claim this job wrote"):
        ownership.inspect_output(local(tmp_path))


def test_the_same_run_joins_its_claim_and_shares_its_time(tmp_path):
    first = ownership.claim_output(local(tmp_path), run_id="r", fingerprint="f", settings={})
    second = ownership.claim_output(local(tmp_path), run_id="r", fingerprint="f", settings={})
    assert second == first
    assert Claim.from_json((tmp_path / "_claim.json").read_bytes()) == first
    with pytest.raises(OutputRefused, match=r"was claimed by run r .* while this run started"):
        ownership.claim_output(local(tmp_path), run_id="q", fingerprint="g", settings={})
    # no temporary file is left beside the claim
    assert sorted(os.listdir(tmp_path)) == ["_claim.json"]


def _race(args) -> str:
    path, fingerprint, start = args
    start.wait()
    try:
        return ownership.claim_output(resolve(path), run_id=fingerprint, fingerprint=fingerprint,
                                      settings={}).fingerprint
    except OutputRefused:
        return "refused"


def test_of_runs_claiming_together_exactly_one_wins_on_local_disk(tmp_path):
    with multiprocessing.Manager() as manager:
        start = manager.Event()
        with multiprocessing.get_context("spawn").Pool(6) as pool:
            result = pool.map_async(_race, [(str(tmp_path), f"run{i}", start) for i in range(6)])
            start.set()
            outcomes = result.get(timeout=120)
    winners = [o for o in outcomes if o != "refused"]
    assert len(winners) == 1, outcomes
    assert json.loads((tmp_path / "_claim.json").read_text())["fingerprint"] == winners[0]


def test_of_runs_claiming_together_exactly_one_wins_on_s3(s3_server, s3_bucket):
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    barrier = Barrier(6)
    output = resolve(f"s3://{s3_bucket}/out")

    def attempt(i: int) -> str:
        barrier.wait()
        try:
            return ownership.claim_output(output, run_id=f"r{i}", fingerprint=f"f{i}",
                                          settings={}).fingerprint
        except OutputRefused:
            return "refused"

    for _ in range(3):
        with ThreadPoolExecutor(6) as pool:
            outcomes = list(pool.map(attempt, range(6)))
        winners = {o for o in outcomes if o != "refused"}
        assert len(winners) == 1, outcomes
        assert output.fs.get_file_info(output.child("_claim.json").path).is_file
        output.fs.delete_file(output.child("_claim.json").path)


def test_a_read_only_output_fails_the_writable_check(tmp_path):
    if os.geteuid() == 0:
        # root writes anywhere: a file where the folder should be is refused by everyone
        (tmp_path / "out").write_text("a file")
    else:
        (tmp_path / "out").mkdir(mode=0o500)
    with pytest.raises(OSError, match=r"cannot write"):
        ownership.check_writable(local(tmp_path / "out"))


@pytest.mark.parametrize(
    "a, b, overlap",
    [
        # the same folder
        ("data", "data", True),
        # input kept under the output
        ("data/crops", "data", True),
        # output inside the input folder
        ("data", "data/out", True),
        # a glob searches its folder
        ("data/*.parquet", "data/out", True),
        # siblings with a common prefix of characters, not of folders
        ("data", "data2", False),
        ("data/images", "data/out", False),
        # through '..'
        ("data/x/../out", "data/out/sub", True),
        # a folder whose name ends in a letter that a sloppy strip would eat
        ("dataX", "dataX/out", True),
    ],
)
def test_overlap_of_local_paths(tmp_path, a, b, overlap):
    assert ownership.overlapping(local(tmp_path / a), local(tmp_path / b)) is overlap
    if "*" not in a:  # an output is never a pattern
        assert ownership.overlapping(local(tmp_path / b), local(tmp_path / a)) is overlap


def test_a_path_with_glob_characters_that_exists_is_that_path(tmp_path):
    from jobs.storage import list_files

    (tmp_path / "images[2024]").mkdir()
    (tmp_path / "images[2024]" / "part-0.parquet").write_bytes(b"PAR1")
    (tmp_path / "images2").mkdir()
    (tmp_path / "images2" / "part-0.parquet").write_bytes(b"PAR1")
    folder = local(tmp_path / "images[2024]")
    assert [f.path for f in list_files(folder)] == [f"{folder.path}/part-0.parquet"]
    assert len(list_files(local(tmp_path / "images[2024]" / "part-0.parquet"))) == 1
    # a pattern still matches as one, when no file or folder has its name
    pattern = local(tmp_path / "images[12]" / "*.parquet")
    assert [f.path.rsplit("/", 2)[-2] for f in list_files(pattern)] == ["images2"]
    # an output named like a pattern is that folder: a sibling of the input, not its parent
    assert not ownership.overlapping(local(tmp_path / "images2"), local(tmp_path / "out[1]"))
    assert ownership.overlapping(local(tmp_path / "images[2024]"),
                                 local(tmp_path / "images[2024]" / "out"))


def test_overlap_through_a_symlink(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert ownership.overlapping(local(tmp_path / "link" / "out"), local(tmp_path / "real"))


def test_overlap_on_object_stores_compares_keys():
    s3 = pafs.S3FileSystem(anonymous=True, region="us-east-1")

    def at(path):
        return Location(s3, path, f"s3://{path}")

    assert ownership.overlapping(at("bucket/data/"), at("bucket/data/out"))
    assert ownership.overlapping(at("bucket//data/images"), at("bucket/data"))
    assert not ownership.overlapping(at("bucket/data"), at("bucket/data2"))
    assert not ownership.overlapping(at("bucket/data"), at("other/data"))
    # different stores never overlap
    assert not ownership.overlapping(at("tmp/data"), resolve("/tmp/data"))


def test_leftovers_removed_are_only_this_runs_temporary_files(tmp_path):
    fingerprint, other = "a" * 64, "b" * 64
    mine, theirs = fingerprint[:16], other[:16]
    names = [
        f"crops/part-{SHARD}.parquet.tmp-{mine}{TMP}",  # this run's failed attempt: removed
        f"_shards/{SHARD}.json.tmp-{mine}{TMP}",  # removed
        f"_work/{mine}/units/unit-3.parquet",  # this run's work area: removed
        f"_work/{mine}/_paired.json",  # removed
        f"_work/{mine}/units/unit-7.parquet",  # named like a work file of a unit it has not:
        # somebody else's (it used to be deleted, --allow-foreign-files or not)
        f"crops/part-{SHARD}.parquet",  # a committed data file: kept
        f"crops/part-{SHARD}.parquet.tmp-{theirs}{TMP}",  # another run's: kept
        f"crops/part-{SHARD}.parquet.tmp-{TMP}",  # untagged (a claim in the making): kept
        f"_work/{mine}/notes.txt",  # not a name the job writes: kept
        "crops/notes.parquet.tmp-x",  # kept
    ]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert ownership.remove_own_leftovers(local(tmp_path), fingerprint, num_units=4) == 4
    kept = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert kept == sorted(names[4:])


def test_an_emptied_work_area_leaves_no_folders(tmp_path):
    fingerprint = "a" * 64
    (tmp_path / "_work" / fingerprint[:16] / "units").mkdir(parents=True)
    (tmp_path / "_work" / fingerprint[:16] / "units" / "unit-0.parquet").write_bytes(b"x")
    assert ownership.remove_own_leftovers(local(tmp_path), fingerprint, num_units=1) == 1
    assert not (tmp_path / "_work").exists()


CRASH_BEFORE_RENAME = """
import os, sys
import pyarrow as pa
from jobs import sinks
from jobs.storage import resolve
os.replace = lambda a, b: os._exit(9)  # the worker dies between the write and the rename
sinks.write_shard(resolve(sys.argv[1]), "a" * 24, {"crops": pa.table({"x": [1]})}, {},
                  fingerprint=sys.argv[2])
"""


def test_a_shard_write_cut_short_by_a_crash_is_removed_by_the_next_attempt(tmp_path):
    # the names write_shard really gives its temporary files, not names the test makes up
    fingerprint = "f" * 64
    crashed = subprocess.run([sys.executable, "-c", CRASH_BEFORE_RENAME, str(tmp_path),
                              fingerprint], capture_output=True, text=True, timeout=120)
    assert crashed.returncode == 9, crashed.stderr
    left = [p.name for p in (tmp_path / "crops").iterdir()]
    assert len(left) == 1 and ".tmp-" in left[0]
    # a unit's work file is the run's only when the run plans that unit (none here)
    (tmp_path / "_work" / fingerprint[:16] / "units").mkdir(parents=True)
    (tmp_path / "_work" / fingerprint[:16] / "units" / "unit-0.parquet").write_bytes(b"x")
    assert ownership.remove_own_leftovers(local(tmp_path), fingerprint) == 1
    assert not any((tmp_path / "crops").iterdir())
    assert (tmp_path / "_work" / fingerprint[:16] / "units" / "unit-0.parquet").exists()


def test_the_filesystem_root_as_output_overlaps_every_input(tmp_path):
    # "/" + "/" is "//": the root used to overlap nothing
    assert ownership.overlapping(local(tmp_path / "images"), resolve("/"))
    assert ownership.overlapping(resolve("/"), local(tmp_path / "out"))
    # a pattern at the root searches the root
    assert ownership.overlapping(resolve("/*.parquet"), local(tmp_path / "out"))


def test_dot_segments_of_object_store_keys_are_ignored_when_comparing():
    s3 = pafs.S3FileSystem(anonymous=True, region="us-east-1")
    assert ownership.overlapping(Location(s3, "bucket/./data", "s3://bucket/./data"),
                                 Location(s3, "bucket/data/out", "s3://bucket/data/out"))


def _commit_manifest(folder, manifest: dict) -> None:
    (folder / "_manifest.json").write_text(json.dumps(manifest))


def test_an_output_committed_before_claims_existed_is_owned_by_its_manifest(tmp_path):
    # a manifest with no claim beside it: the run it names owns the output
    _commit_manifest(tmp_path, {"run_id": "old", "fingerprint": "f0",
                                "settings": {"step": "s1"}})
    state = ownership.inspect_output(local(tmp_path))
    assert state.claim is None and state.manifest["run_id"] == "old"
    # the same run (a rerun of a committed run) passes
    ownership.check_output(local(tmp_path), state, run_id="old", fingerprint="f0",
                           settings={"step": "s1"}, allow_foreign=True)

    def describe(old, new):
        return "step" if old["step"] != new["step"] else ""

    with pytest.raises(OutputRefused) as refused:
        ownership.check_output(local(tmp_path), state, run_id="new", fingerprint="f1",
                               settings={"step": "s2"}, allow_foreign=True, describe=describe)
    assert str(refused.value) == (f"{local(tmp_path).url} belongs to run old, committed, with "
                                  f"other step; write to a new --output (nothing was changed)")


def test_a_minimal_manifest_names_its_owner_and_settings_are_optional(tmp_path):
    _commit_manifest(tmp_path, {"run_id": "old", "fingerprint": "f0"})
    state = ownership.inspect_output(local(tmp_path))

    def describe(old, new):  # would fail on an owner without settings: it is not asked
        return "step" if old["step"] != new["step"] else ""

    with pytest.raises(OutputRefused, match=r"belongs to run old, committed, with other run id "
                                            r"\(old there, new here\); write to a new"):
        ownership.check_output(local(tmp_path), state, run_id="new", fingerprint="f1",
                               settings={"step": "s2"}, allow_foreign=True, describe=describe)


def test_a_refusal_without_a_description_falls_back_to_what_may_differ(tmp_path):
    output = local(tmp_path)
    ownership.claim_output(output, run_id="r", fingerprint="a", settings={"step": "s"})
    state = ownership.inspect_output(output)
    assert state.manifest is None and state.own_data == 0 and state.foreign == ()
    # same run id, another fingerprint, no describe: the generic list
    with pytest.raises(OutputRefused, match=r"belongs to run r, claimed \(running, or stopped "
                                            r"before its commit\), with other inputs, step, "
                                            r"settings or code version; write to a new"):
        ownership.check_output(output, state, run_id="r", fingerprint="b", settings={},
                               allow_foreign=False)
    # another run id, no describe: the run ids
    with pytest.raises(OutputRefused, match=r"with other run id \(r there, q here\)"):
        ownership.check_output(output, state, run_id="q", fingerprint="b", settings={},
                               allow_foreign=False)


def test_a_claimed_and_committed_output_of_another_run_says_committed_and_keeps_its_claim(
        tmp_path):
    output = local(tmp_path)
    ownership.claim_output(output, run_id="r", fingerprint="a", settings={})
    _commit_manifest(tmp_path, {"run_id": "r", "fingerprint": "a"})
    state = ownership.inspect_output(output)
    assert state.manifest == {"run_id": "r", "fingerprint": "a"}
    with pytest.raises(OutputRefused) as refused:
        ownership.check_output(output, state, run_id="q", fingerprint="b", settings={},
                               allow_foreign=False)
    message = str(refused.value)
    assert "belongs to run r, committed," in message
    assert "_claim.json" not in message  # no release hint for a committed run


@pytest.mark.parametrize("document, why", [
    ('{"fingerprint": "f"}', r"it has no run_id and fingerprint"),
    ("[1]", r"a JSON list"),
    ("{nope", r"is not valid JSON"),
])
def test_a_manifest_that_is_not_ours_is_refused_naming_it(tmp_path, document, why):
    (tmp_path / "_manifest.json").write_text(document)
    with pytest.raises(OutputRefused, match=rf"^{local(tmp_path).url}/_manifest\.json .*{why}.*"
                                            rf"choose a new --output$"):
        ownership.inspect_output(local(tmp_path))


def test_a_claim_that_is_not_an_object_is_refused_naming_it(tmp_path):
    (tmp_path / "_claim.json").write_text("[1]")
    with pytest.raises(OutputRefused, match=rf"^{local(tmp_path).url}/_claim\.json is not a claim"
                                            rf" this job wrote \(TypeError\); choose a new"):
        ownership.inspect_output(local(tmp_path))
    # claiming it says so too, in one line
    with pytest.raises(OutputRefused, match=r"_claim\.json exists but cannot be read as a claim; "
                                            r"write to a new --output \(nothing was changed\)$"):
        ownership.claim_output(local(tmp_path), run_id="r", fingerprint="f", settings={})


def test_a_concurrent_runs_probe_and_claim_in_the_making_are_not_data(tmp_path):
    (tmp_path / f"_probe-{TMP}").write_bytes(b"")
    (tmp_path / f"_claim.json.tmp-{TMP}").write_bytes(b"{}")
    state = ownership.inspect_output(local(tmp_path))
    assert state.own_data == 0 and state.foreign == ()
    ownership.check_output(local(tmp_path), state, allow_foreign=False, **claim_for("f"))


def test_three_foreign_files_are_all_named(tmp_path):
    for name in ("a.txt", "b.txt", "c.txt"):
        (tmp_path / name).write_text("user data")
    with pytest.raises(OutputRefused, match=r"holds files this job did not write \(a\.txt, b\.txt, "
                                            r"c\.txt\); use an empty"):
        ownership.check_output(local(tmp_path), ownership.inspect_output(local(tmp_path)),
                               allow_foreign=False, **claim_for("f"))


def test_a_claim_records_its_time_in_utc(tmp_path):
    claim = ownership.claim_output(local(tmp_path), run_id="r", fingerprint="f", settings={})
    assert claim.created_at.endswith("+00:00")


def test_the_writable_check_leaves_no_probe_and_validate_leaves_no_folder(tmp_path):
    ownership.check_writable(local(tmp_path / "run" / "out"))  # a run keeps its folder
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["out"]
    assert not any((tmp_path / "run" / "out").iterdir())
    ownership.check_writable(local(tmp_path / "validate" / "a" / "b"), leave_no_folder=True)
    assert not (tmp_path / "validate").exists()
    # a folder that already existed stays
    (tmp_path / "kept").mkdir()
    ownership.check_writable(local(tmp_path / "kept" / "out"), leave_no_folder=True)
    assert (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir())


def test_a_committed_run_removes_its_work_area_but_not_temporary_files(tmp_path):
    # work_only: a start that finds its run committed; a concurrent attempt of the same run
    # may still be writing its temporary files, which it must not lose
    fingerprint = "a" * 64
    mine = fingerprint[:16]
    names = [f"_work/{mine}/_paired.json", f"_work/{mine}/units/unit-0.parquet",
             f"crops/part-{SHARD}.parquet.tmp-{mine}{TMP}"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    assert ownership.remove_own_leftovers(local(tmp_path), fingerprint, num_units=1,
                                          work_only=True) == 2
    assert [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()] == \
        [names[2]]
    assert not (tmp_path / "_work").exists()


def test_an_emptied_work_area_beside_another_runs_leaves_that_one(tmp_path):
    fingerprint, other = "a" * 64, "b" * 64
    (tmp_path / "_work" / fingerprint[:16]).mkdir(parents=True)
    (tmp_path / "_work" / fingerprint[:16] / "_paired.json").write_bytes(b"x")
    (tmp_path / "_work" / other[:16]).mkdir(parents=True)
    (tmp_path / "_work" / other[:16] / "_paired.json").write_bytes(b"x")
    assert ownership.remove_own_leftovers(local(tmp_path), fingerprint) == 1
    assert [p.name for p in (tmp_path / "_work").iterdir()] == [other[:16]]
