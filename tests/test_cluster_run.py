"""train.py on two loopback workers, as docs/distributed.md runs a large folder on machines:
streamed, views cut from the full-resolution photos, each worker reading its share, the kNN
monitor streaming its bank, and the chief alone writing the run."""

import csv
import os

import loopback_cluster as cluster
import numpy as np
import pytest
from PIL import Image

TRAIN = os.path.join(cluster.REPO, "train.py")


@pytest.mark.slow
def test_two_workers_train_a_streamed_folder_of_photos_with_the_monitor(tmp_path):
    rng = np.random.default_rng(0)
    for label in range(2):
        (tmp_path / "photos" / f"c{label}").mkdir(parents=True)
        for i in range(40):
            pixels = rng.normal(90 + 80 * label, 40, (40, 48, 3)).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(tmp_path / "photos" / f"c{label}" / f"{i}.jpg")
    workdir = tmp_path / "run"
    args = [
        "--config=digits:smoke",
        f"--dataset=folder:{tmp_path / 'photos'}",
        "--holdout=0.2",
        "--image_size=32",
        "--batch_size=16",
        "--epochs=2",
        "--precision=float32",
        "--strategy=multi_worker",
        "--config.memory_budget_mb=0.01",  # 80 images of 32 px are 240 KB: all streamed
        f"--workdir={workdir}",
    ]
    logs, processes = {}, {}
    for index, tf_config in enumerate(cluster.cluster_configs(2)):
        logs[index] = tmp_path / f"worker{index}.log"
        processes[index] = cluster.launch(TRAIN, args, logs[index], tf_config)
    cluster.check_exit_codes(cluster.wait(processes), {0: 0, 1: 0}, logs)
    for log in logs.values():
        text = log.read_text()
        assert "views cut from full-resolution images (first image 40x48 > 32)" in text
        assert "do not fit the 0.01 MiB memory budget, so they are streamed" in text
    # 64 training photos, 32 per worker: 64 // 16 = 4 steps an epoch.
    assert "4 steps per epoch" in logs[0].read_text()
    with open(workdir / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["0", "1", "2"]
    assert all(float(row["knn_top1"]) > 0 for row in rows)
    assert (workdir / "export" / "carl.keras").is_file()
    assert not list(tmp_path.glob("run.workertemp_*"))  # worker 1 removed its scratch copy
