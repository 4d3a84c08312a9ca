"""The job's own conventions, run in-process (no Ray): a pixel box becomes TensorFlow's
normalized box by ``p / (size - 1)``."""


import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jobs import schema, steps
from jobs.pipeline import JobConfig, prepare
from jobs.pipeline import crop_in_process as pair_and_crop
from tests.jobs.builders import image_pixels, images_table, write_parquet


def crop_in_process(tmp_path, step: dict) -> pa.Table:
    config = JobConfig(images=str(tmp_path / "images.parquet"),
                       detections=str(tmp_path / "detections.parquet"),
                       output=str(tmp_path / "out"), step=steps.parse_step(step))
    prepared = prepare(config)
    pair_and_crop(prepared)
    return pq.read_table(tmp_path / "out" / "crops").sort_by("detection_id")


def test_convention_pixel_box_maps_to_normalized_by_size_minus_one(tmp_path):
    """Pixel corners (x0, y0, x1, y1) are TF's (y0 / (H - 1), x0 / (W - 1), ...): with a crop
    size of one sample per pixel, the crop is the pixels themselves, inclusive of both ends."""
    write_parquet(images_table(1), tmp_path / "images.parquet")  # 64 x 48
    boxes = {"a": (8, 4, 23, 19), "b": (0, 0, 63, 47), "c": (40, 30, 55, 45)}
    write_parquet(pa.Table.from_pylist([
        {"image_id": "im0", "detection_id": k, "x_min": float(x0), "y_min": float(y0),
         "x_max": float(x1), "y_max": float(y1)} for k, (x0, y0, x1, y1) in boxes.items()
    ]), tmp_path / "detections.parquet")
    crops = crop_in_process(tmp_path, {"type": "cropcore/crop_and_resize@v1",
                                       "crop_size": [16, 16]})
    tensors = schema.npy_crop_tensors(crops["crop"])
    pixels = image_pixels(0).astype(np.float32)
    for tensor, detection_id in zip(tensors, crops["detection_id"].to_pylist(), strict=True):
        x0, y0, x1, y1 = boxes[detection_id]
        if detection_id == "b":  # the whole image, every third-ish pixel: both corners exact
            assert tensor[0, 0].tolist() == pixels[0, 0].tolist()
            np.testing.assert_allclose(tensor[-1, -1], pixels[47, 63], atol=1e-3)
            continue
        # a p / size mapping would be off by about a third of a pixel here
        np.testing.assert_allclose(tensor, pixels[y0 : y1 + 1, x0 : x1 + 1], atol=1e-3)
