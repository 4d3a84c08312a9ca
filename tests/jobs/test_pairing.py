"""jobs/pairing.py: detections paired with their images by the rules, in one process and on Ray.

A slow reference applies the rules row by row in input order; the fast passes (in one process,
and partitioned on a real Ray cluster) must give the same staged units and error rows.
"""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs import pairing
from jobs.plan import make_plan
from jobs.storage import StorageError, resolve

IDS = ["a", "b", "c", None]


def write_inputs(root, image_files: list[list[str | None]], detection_files: list[list[tuple]],
                 row_group_size: int = 2):
    """Images files of ids, and detections files of ``(image_id, detection_id)`` rows; no
    files at all is one file with no rows (a folder without Parquet files is refused)."""
    image_files, detection_files = image_files or [[]], detection_files or [[]]
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "detections").mkdir(parents=True, exist_ok=True)
    for i, ids in enumerate(image_files):
        table = pa.table({"image_id": pa.array(ids, pa.string()),
                          "image": pa.array([b"x"] * len(ids), pa.binary())})
        pq.write_table(table, root / "images" / f"part-{i}.parquet",
                       row_group_size=row_group_size)
    for i, rows in enumerate(detection_files):
        table = pa.table({
            "image_id": pa.array([r[0] for r in rows], pa.string()),
            "detection_id": pa.array([r[1] for r in rows], pa.string()),
            **{c: pa.array([float(k) for k in range(len(rows))]) for c in
               ("x_min", "y_min", "x_max", "y_max")},
        })
        pq.write_table(table, root / "detections" / f"part-{i}.parquet",
                       row_group_size=row_group_size)


def plan_for(root):
    return make_plan(str(root / "images"), str(root / "detections"), needs_detections=True,
                     keep_columns=None, parameter_columns={})


def outcome(root, result: pairing.Pairing, plan) -> tuple[dict, Counter]:
    """``{(unit, row): [detection ids]}`` and ``Counter((image_id, detection_id, reason,
    source))``, the source the error row's ``source_uri`` without its folder."""
    work = resolve(str(root / "out" / "_work"))
    staged = {}
    for unit in sorted(result.staged_units):
        detections, skipped = pairing.read_unit_rows(work, unit)
        for row in skipped:
            staged.setdefault((unit, row), []).append("SKIP")
        names = (detections.column("detection_id").to_pylist()
                 if "detection_id" in detections.column_names else [])
        for row, detection in zip(detections.column(pairing.ROW).to_pylist(), names,
                                  strict=True):
            staged.setdefault((unit, row), []).append(detection)
    errors = Counter()
    for marker in result.markers:
        for entry in marker["files"]:
            table = pq.read_table(root / "out" / entry["path"])
            for r in table.to_pylist():
                source = r["source_uri"].rsplit("/", 1)[-1]
                errors[r["image_id"], r["detection_id"], r["reason"], source] += 1
    return staged, errors


def reference(image_files, detection_files, row_group_size=2) -> tuple[dict, Counter]:
    """The rules, row by row in input order."""
    first_row_of_id, staged, errors = {}, {}, Counter()
    unit = 0
    for ids in image_files:
        for start in range(0, len(ids), row_group_size):
            for row, image_id in enumerate(ids[start:start + row_group_size]):
                if image_id is None or image_id in first_row_of_id:
                    # skipped; its error row is the crop stage's (it knows the row's file)
                    staged.setdefault((unit, row), []).append("SKIP")
                else:
                    first_row_of_id[image_id] = (unit, row)
            unit += 1
    seen = set()
    for i, rows in enumerate(detection_files):
        for row, (image_id, detection_id) in enumerate(rows):
            source = f"part-{i}.parquet#row={row}"
            if image_id is None or detection_id is None:
                errors[image_id, detection_id, "missing_id", source] += 1
            elif detection_id in seen:
                errors[image_id, detection_id, "duplicate_detection_id", source] += 1
            elif image_id not in first_row_of_id:
                seen.add(detection_id)
                errors[image_id, detection_id, "image_missing", source] += 1
            else:
                seen.add(detection_id)
                staged.setdefault(first_row_of_id[image_id], []).append(detection_id)
    # staged detections are listed in row order, then input order
    return staged, errors


def pair_here(root):
    plan = plan_for(root)
    result = pairing.pair_in_process(plan, resolve(str(root / "out")),
                                     resolve(str(root / "out" / "_work")), "f" * 64)
    return outcome(root, result, plan)


def normalized(staged: dict) -> dict:
    # skips first (they carry no detections), then detections in order
    return {k: sorted(v, key=lambda d: d != "SKIP") for k, v in staged.items()}


def test_the_rules_on_a_table(tmp_path):
    images = [["a", "b", "a"], [None, "c"]]
    detections = [[("a", "1"), ("b", "2"), ("z", "3"), ("a", "1")],
                  [(None, "4"), ("c", None), ("c", "5"), ("a", "6")]]
    write_inputs(tmp_path, images, detections)
    staged, errors = pair_here(tmp_path)
    # units: file 0 rows 0-1 -> unit 0, row 2 -> unit 1; file 1 -> unit 2
    assert normalized(staged) == {(0, 0): ["1", "6"], (0, 1): ["2"], (1, 0): ["SKIP"],
                                  (2, 0): ["SKIP"], (2, 1): ["5"]}
    # the second "a" row and the null id are SKIPs, not errors here; each error names its own
    # detections row (counted within its file, across row groups of 2)
    assert errors == Counter({
        ("z", "3", "image_missing", "part-0.parquet#row=2"): 1,
        # across files, the first row wins
        ("a", "1", "duplicate_detection_id", "part-0.parquet#row=3"): 1,
        (None, "4", "missing_id", "part-1.parquet#row=0"): 1,
        ("c", None, "missing_id", "part-1.parquet#row=1"): 1,
    })
    assert normalized(reference(images, detections)[0]) == normalized(staged)
    assert reference(images, detections)[1] == errors


def test_no_detections_only_skips_duplicate_images(tmp_path):
    write_inputs(tmp_path, [["a", "a"]], [])
    plan = make_plan(str(tmp_path / "images"), None, needs_detections=False, keep_columns=None,
                     parameter_columns={})
    result = pairing.pair_in_process(plan, resolve(str(tmp_path / "out")),
                                     resolve(str(tmp_path / "out" / "_work")), "f" * 64)
    staged, errors = outcome(tmp_path, result, plan)
    assert staged == {(0, 1): ["SKIP"]}
    assert errors == Counter()


def test_empty_inputs(tmp_path):
    write_inputs(tmp_path, [[]], [[]])
    staged, errors = pair_here(tmp_path)
    assert (staged, errors) == ({}, Counter())
    (tmp_path / "detections" / "part-0.parquet").unlink()
    with pytest.raises(StorageError, match=r"--detections .* holds no Parquet files"):
        plan_for(tmp_path)


def test_the_plan_reads_footers_only(tmp_path):
    write_inputs(tmp_path, [["a", "b", "c"], ["d"]], [[("a", "1")] * 3, [("b", "2")]])
    plan = plan_for(tmp_path)
    assert [(u.index, u.row_group, u.first_row, u.num_rows) for u in plan.units] == [
        (0, 0, 0, 2), (1, 1, 2, 1), (2, 0, 0, 1)]
    assert [(p.row_group, p.first_order, p.num_rows, p.first_row)
            for p in plan.detection_parts] == [(0, 0, 2, 0), (1, 2, 1, 2), (0, 3, 1, 0)]
    assert (plan.num_images, plan.num_detections) == (4, 4)
    sizes = [pq.ParquetFile(f).metadata.row_group(g).total_byte_size
             for f in sorted((tmp_path / "detections").iterdir())
             for g in range(pq.ParquetFile(f).metadata.num_row_groups)]
    assert plan.detection_bytes == sum(sizes) > 0


@pytest.mark.parametrize("data_bytes, num_cpus, expected", [
    (0, 2, 16 << 20),  # never below 16 MiB
    (400 << 20, 2, 100 << 20),  # two batches per CPU
    (400 << 20, 1, 200 << 20),
    (1 << 40, 8, 1 << 30),  # never above Ray Data's 1 GiB
    (400 << 20, 0, 200 << 20),  # no CPU reported: counted as one
])
def test_shuffle_batches_give_each_cpu_two(data_bytes, num_cpus, expected):
    assert pairing.shuffle_batch_bytes(data_bytes, num_cpus) == expected


ids = st.sampled_from(IDS)


@settings(max_examples=60, deadline=None)
@given(images=st.lists(st.lists(ids, max_size=5), min_size=1, max_size=3),
       detections=st.lists(st.lists(st.tuples(ids, st.sampled_from(["1", "2", "3", None])),
                                    max_size=6), max_size=3))
def test_pairing_matches_the_reference(tmp_path_factory, images, detections):
    root = tmp_path_factory.mktemp("pairing")
    write_inputs(root, images, detections)
    staged, errors = pair_here(root)
    expected_staged, expected_errors = reference(images, detections)
    assert normalized(staged) == normalized(expected_staged)
    assert errors == expected_errors


@pytest.mark.slow
def test_partitioned_on_ray_matches_one_task(ray_cluster, tmp_path, monkeypatch):
    images = [["a", "b", "a", "c", None, "d"], ["e", "b", "f"]]
    detections = [[("a", "1"), ("b", "2"), ("z", "3"), ("a", "1"), ("f", "7")],
                  [(None, "4"), ("c", None), ("c", "5"), ("a", "6"), ("e", "2")]]
    write_inputs(tmp_path, images, detections)
    plan = plan_for(tmp_path)
    monkeypatch.setattr(pairing, "SINGLE_TASK_ROWS", 0)  # force the three shuffles
    result = pairing.pair(plan, resolve(str(tmp_path / "out")),
                          resolve(str(tmp_path / "out" / "_work")), "f" * 64, num_cpus=2)
    staged, errors = outcome(tmp_path, result, plan)
    expected_staged, expected_errors = reference(images, detections)
    assert normalized(staged) == normalized(expected_staged)
    assert errors == expected_errors
    # done once: the work area's record is read back instead of pairing again
    done = json.loads((tmp_path / "out" / "_work" / "_paired.json").read_text())
    assert sorted(done["staged_units"]) == sorted(result.staged_units)
    assert pairing.pair(plan, resolve(str(tmp_path / "out")),
                        resolve(str(tmp_path / "out" / "_work")), "f" * 64, 2) == result
