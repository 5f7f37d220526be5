"""Runs on data larger than the memory budget: the kNN monitor streams its bank and queries, a
training subset decodes only what it keeps, and no split is held decoded in memory.

benchmarks/bounded_memory.py measures the peak resident memory at a size where it shows
(docs/benchmarks.md); at test sizes TensorFlow's own allocations swamp it.
"""

import json
import logging
import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import tensorflow as tf

from carl_tf import data
from carl_tf.configs import digits
from carl_tf.evaluation.monitor import KNNMonitor
from carl_tf.method.backbones import build_backbone
from carl_tf.training import pretrain

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZE = 16


def write_folder(root, count: int, classes: int = 4, size: int = SIZE) -> None:
    """`count` PNGs of class-dependent colour plus noise, in `classes` class folders."""
    rng = np.random.default_rng(0)
    for i in range(count):
        label = i % classes
        directory = root / f"class_{label}"
        directory.mkdir(parents=True, exist_ok=True)
        image = rng.normal(60 * label, 30, (size, size, 3)).clip(0, 255).astype(np.uint8)
        (directory / f"{i:05d}.png").write_bytes(tf.io.encode_png(image).numpy())


def folder_config(root, **fields):
    config = digits.get_config("smoke")
    config.dataset = f"folder:{root}"
    config.image_size = SIZE
    config.holdout = 0.25
    config.update(fields)
    return config


class FakeCARL:
    def __init__(self, backbone):
        self.backbone = backbone


def test_the_monitor_streams_a_split_over_the_budget_and_measures_the_same(tmp_path):
    write_folder(tmp_path, 80)
    # 60 + 20 images of 16x16x3 = 46 KB; a budget of 0.01 MiB (10 KB) streams both splits.
    streamed_sets = pretrain.load_knn_sets(folder_config(tmp_path, memory_budget_mb=0.01))
    held_sets = pretrain.load_knn_sets(folder_config(tmp_path))
    assert all(isinstance(s, tf.data.Dataset) for s in streamed_sets)
    assert all(isinstance(s, tuple) for s in held_sets)
    backbone = build_backbone("resnet18", width=4, image_size=SIZE)
    figures = []
    for bank, queries in (streamed_sets, held_sets):
        monitor = KNNMonitor(bank, queries, k=5)
        monitor.set_model(FakeCARL(backbone))
        figures.append(monitor.measure())
    assert figures[0] == pytest.approx(figures[1], abs=1e-6)
    assert figures[0] > 50  # the colour tells the class apart even without training


def test_knn_bank_size_is_a_fixed_seeded_subset_and_logged(tmp_path, caplog):
    write_folder(tmp_path, 80)
    config = folder_config(tmp_path, memory_budget_mb=0.01, knn_bank_size=24)
    with caplog.at_level(logging.INFO, logger="carl_tf.training.pretrain"):
        bank, queries = pretrain.load_knn_sets(config)
    assert "kNN bank: 24 of the 60 images" in caplog.text
    bank_labels = np.concatenate([y for _, y in bank.as_numpy_iterator()])
    again = np.concatenate([y for _, y in pretrain.load_knn_sets(config)[0].as_numpy_iterator()])
    assert len(bank_labels) == 24 and np.array_equal(bank_labels, again)
    assert sum(len(y) for _, y in queries.as_numpy_iterator()) == 20  # queries stay whole


def test_train_subset_of_a_streamed_folder_keeps_the_in_memory_choice(tmp_path):
    write_folder(tmp_path, 40)
    config = folder_config(tmp_path, holdout=0.0, train_subset=10)
    held = pretrain.training_subset(config, pretrain.load_training_split(config))
    config.memory_budget_mb = 0.001
    streamed = pretrain.training_subset(config, pretrain.load_training_split(config))
    assert held.arrays is not None and streamed.arrays is None
    assert streamed.num_examples == held.num_examples == 10
    images, labels = data.source_arrays(streamed)
    np.testing.assert_array_equal(images, held.arrays[0])
    np.testing.assert_array_equal(labels, held.arrays[1])


def test_a_run_streams_everything_and_trains_with_the_monitor(tmp_path, monkeypatch):
    """The monitor's similarity blocks are held to the run's budget too."""
    budgets = []

    class RecordingMonitor(pretrain.KNNMonitor):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            budgets.append(self.memory_budget_mb)

    monkeypatch.setattr(pretrain, "KNNMonitor", RecordingMonitor)
    write_folder(tmp_path / "images", 160)
    config = folder_config(tmp_path / "images", memory_budget_mb=0.01, epochs=1, batch_size=32)
    result = pretrain.pretrain(config, str(tmp_path / "run"))
    assert result.trained and result.knn_untrained is not None and result.knn_final is not None
    assert budgets == [0.01]


def test_a_streamed_run_holds_no_images_while_a_held_one_holds_them_all(tmp_path):
    """The memory (traced by tracemalloc) that the training subset and the kNN sets still hold
    after a measurement: streamed, a fraction of one split's decoded size; held, all of it.

    tracemalloc sees NumPy's arrays (the decoded splits a held source keeps, the features of a
    measurement) and Python's objects, not TensorFlow's tensors.
    """
    write_folder(tmp_path, 3000, size=32)  # 2400 + 600 images of 32x32x3: 7.4 MB + 1.8 MB
    backbone = build_backbone("resnet18", width=4, image_size=32)
    decoded = 2400 * 32 * 32 * 3

    def still_held(budget_mb: float) -> int:
        config = folder_config(tmp_path, image_size=32, train_subset=64)
        config.memory_budget_mb = budget_mb
        tracemalloc.start()
        try:
            kept = (
                pretrain.training_subset(config, pretrain.load_training_split(config)),
                pretrain.load_knn_sets(config),
            )
            monitor = KNNMonitor(*kept[1], k=5)
            monitor.set_model(FakeCARL(backbone))
            monitor.measure()
            return tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()

    streamed, held = still_held(0.01), still_held(4096)
    assert held > decoded, (streamed, held)
    # About 2.6 MB of it is Python's record of the traced tf.data and tf.function graphs.
    assert streamed < decoded / 2, (streamed, held)


@pytest.mark.slow
def test_the_bounded_memory_benchmark_reports_its_figures(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            os.path.join("benchmarks", "bounded_memory.py"),
            f"--folder={tmp_path / 'photos'}",
            "--files=60",
            "--width=60",
            "--height=50",
            "--image_size=32",
            "--memory_budget_mb=0.05",
            "--train_subset=32",
            "--batch_size=16",
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["streamed"] and figures["peak_rss_mb"] > 0
    assert figures["knn_untrained"] is not None and figures["knn_final"] is not None
