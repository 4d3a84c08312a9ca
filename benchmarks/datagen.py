"""The benchmark's inputs: datasets of several sizes from the demo's generator
(``jobs.demodata``), with the first N images of the largest shared by every smaller size, and
a photograph and random boxes for the kernel measurements."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

__all__ = [
    "JPEG_QUALITY",
    "ROWS_PER_GROUP",
    "dataset_spec",
    "photo",
    "prepare_datasets",
    "random_boxes",
    "resolution_label",
]

JPEG_QUALITY = 90
# Images per Parquet row group, the job's unit of work (one Ray task). Hugging Face datasets
# writes image tables with 100 rows per row group; the demo writes 8. --quick uses 8, so that its
# small datasets still make several tasks.
ROWS_PER_GROUP = 32


def resolution_label(size_wh: tuple[int, int]) -> str:
    """``"WIDTHxHEIGHT"``, the name of a resolution in results and folder names."""
    return f"{size_wh[0]}x{size_wh[1]}"


def dataset_spec(size_wh: tuple[int, int], num_images: int,
                 rows_per_group: int = ROWS_PER_GROUP):
    """The generated data: real photographs, 5-50 detections per image, masks on about half,
    about 10% of images without detections, JPEG q90."""
    from jobs.demodata import DatasetSpec

    return DatasetSpec(num_images=num_images, size_wh=size_wh, detections_range=(5, 50),
                       masked_share=0.5, no_detections_share=0.1, quality=JPEG_QUALITY,
                       rows_per_group=rows_per_group, seed=0)


def prepare_datasets(root: Path, size_wh: tuple[int, int], counts: list[int],
                     rows_per_group: int = ROWS_PER_GROUP) -> dict[int, dict]:
    """``{n: {"root": path, "counts": {...}}}``: one generated dataset of ``max(counts)`` images,
    and for every smaller n its first n images (what generating n images with the same seed
    would give), each with ``images/`` and ``detections/`` Parquet folders. Kept for reruns."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from jobs.demodata import make_dataset

    largest = max(counts)
    spec = dataset_spec(size_wh, largest, rows_per_group)
    stem = f"{resolution_label(size_wh)}-rg{rows_per_group}"
    source = root / f"{stem}-{largest}"
    source_key = json.dumps(asdict(spec), sort_keys=True)
    if _marker(source) != source_key:
        shutil.rmtree(source, ignore_errors=True)
        make_dataset(str(source), spec)
        _write_marker(source, source_key)
    out = {}
    images = detections = None
    for n in counts:
        target = root / f"{stem}-{n}"
        key = json.dumps({"from": source_key, "first": n}, sort_keys=True)
        if n != largest and _marker(target) != key:
            if images is None:
                images = pq.read_table(source / "images")
                detections = pq.read_table(source / "detections")
            shutil.rmtree(target, ignore_errors=True)
            head = images.slice(0, n)
            mine = detections.filter(pc.is_in(detections.column("image_id"),
                                               value_set=head.column("image_id")))
            for name, table, group in (("images", head, rows_per_group),
                                       ("detections", mine, 65536)):
                (target / name).mkdir(parents=True)
                pq.write_table(table, target / name / "part-00000.parquet", row_group_size=group)
            _write_marker(target, key)
        path = source if n == largest else target
        meta_images = pq.ParquetFile(path / "images" / "part-00000.parquet").metadata
        meta_detections = pq.ParquetFile(path / "detections" / "part-00000.parquet").metadata
        out[n] = {"root": path, "counts": {"images": meta_images.num_rows,
                                           "detections": meta_detections.num_rows}}
    return out


def _marker(root: Path) -> str | None:
    marker = root / "_bench_spec.json"
    return marker.read_text() if marker.exists() else None


def _write_marker(root: Path, key: str) -> None:
    (root / "_bench_spec.json").write_text(key)


def photo(size_wh: tuple[int, int]):
    """The first demo photograph resized to ``size_wh``, BGR uint8."""
    import cv2

    from jobs.demodata import sample_photographs

    return cv2.resize(sample_photographs()[0], size_wh, interpolation=cv2.INTER_LINEAR)


def random_boxes(num_boxes: int, size_wh: tuple[int, int], seed: int = 1):
    """``(N, 4)`` float32 normalized ``(y1, x1, y2, x2)`` boxes of 64-600 px inside the image,
    in TensorFlow's convention (pixel ``p`` is ``p / (size - 1)``)."""
    import numpy as np

    width, height = size_wh
    rng = np.random.default_rng(seed)
    box_h = rng.uniform(64, min(600, height), num_boxes)
    box_w = rng.uniform(64, min(600, width), num_boxes)
    y0 = rng.uniform(0, height - box_h)
    x0 = rng.uniform(0, width - box_w)
    pixels = np.stack([y0, x0, y0 + box_h, x0 + box_w], axis=1)
    scale = np.array([height - 1, width - 1, height - 1, width - 1], dtype=np.float64)
    return (pixels / scale).astype(np.float32)
