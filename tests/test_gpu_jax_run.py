"""benchmarks/gpu_jax_run.py end to end on CPU, under JAX with TensorFlow unimportable.

The GPU run is one prepared command for a machine with JAX but no TensorFlow; this runs the
same command at smoke size on a generated tarball of JPEG class folders, with a tiny budget.
"""

import csv
import json
import math
import tarfile

import numpy as np
import pytest
from jax_support import REPO, requires_jax, run_under_jax
from PIL import Image

CLASSES, PER_CLASS = 10, 20


def write_tarball(path, root):
    """200 JPEGs of 32x32 in ten class folders, packed as `train/<class>/NNNN.jpg`."""
    rng = np.random.default_rng(0)
    for label in range(CLASSES):
        folder = root / "train" / f"class{label}"
        folder.mkdir(parents=True)
        colour = rng.integers(0, 256, 3)
        for i in range(PER_CLASS):
            pixels = np.clip(colour + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:04d}.jpg")
    with tarfile.open(path, "w:gz") as archive:
        archive.add(root / "train", arcname="train")


@pytest.mark.slow
@requires_jax
def test_smoke_run_writes_curve_and_summary(tmp_path):
    tarball = tmp_path / "images.tar.gz"
    write_tarball(tarball, tmp_path / "images")
    wheels, scratch, out = tmp_path / "wheels", tmp_path / "scratch", tmp_path / "out"
    wheels.mkdir()
    scratch.mkdir()
    result = run_under_jax(
        [
            str(REPO / "benchmarks" / "gpu_jax_run.py"),
            f"--data={tarball}",
            f"--out={out}",
            "--minutes=0.1",
            "--knn_every=2",
            "--smoke",
            # Everything is installed here (carl_tf editable from this checkout), so the empty
            # folder is never read.
            f"--wheels={wheels}",
        ],
        without_tensorflow=True,
        timeout=600,
        TMPDIR=str(scratch),
    )
    assert "every package this run needs is installed" in result.stdout

    with open(out / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["epoch"] == "0" and math.isfinite(float(rows[0]["knn_top1"]))
    trained = rows[1:]
    assert trained, "no epoch finished"
    assert all(math.isfinite(float(row["loss"])) for row in trained)
    assert all(float(row["images_per_s"]) > 0 for row in trained)
    assert [int(row["steps"]) for row in trained] == sorted(int(r["steps"]) for r in trained)
    assert math.isfinite(float(trained[-1]["knn_top1"]))  # measured after the last epoch

    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] in ("time budget spent", "epochs done")
    assert summary["images_per_s"] > 0 and summary["images_per_s_overall"] > 0
    assert summary["epochs_done"] == len(trained)
    assert summary["train_images"] == 180 and summary["knn_queries"] == 20
    assert summary["precision"] == "float32" and summary["platform"] == "cpu"
    assert summary["knn_top1_last"] == float(trained[-1]["knn_top1"])
    for key in ("peak_device_memory_bytes", "device_kind", "jax", "keras", "minutes"):
        assert key in summary
    assert (out / "run.log").read_text().count("epoch ") >= len(trained)
    assert not list(scratch.iterdir()), "the extracted images were left behind"
