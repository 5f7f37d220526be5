"""What a run shows while it trains: the epoch line, TensorBoard's records, prototype usage."""

import glob
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

import carl_tf
from carl_tf.method.backbones import build_backbone
from carl_tf.run.progress import EpochLog, RunTensorBoard, epoch_line

BATCH, STEPS = 16, 4


def small_carl():
    keras.utils.set_random_seed(0)
    model = carl_tf.CARL(
        build_backbone("resnet18", width=4, image_size=16),
        num_prototypes=12,
        projection_hidden_units=(32,),
        projection_dim=16,
        augmenter=carl_tf.SimCLRAugment(image_size=16, crop_scale=(0.5, 1.0)),
    )
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    return model


def images(n=BATCH * STEPS):
    return np.random.default_rng(0).integers(0, 256, (n, 16, 16, 3)).astype("uint8")


def test_epoch_line_reads_as_a_person_writes_it():
    logs = {"loss": 4.59431, "prototypes_in_use": 36.82, "knn_top1": 52.66}
    line = epoch_line(5, 30, logs, elapsed=250, remaining=21 * 60)
    assert line == (
        "epoch 5/30 · loss 4.5943 · prototypes in use 36.8 · kNN 52.7% · elapsed 4:10 · "
        "about 21 min left"
    )
    assert epoch_line(30, 30, {}, elapsed=3725, remaining=0) == "epoch 30/30 · elapsed 1:02:05"


def test_validation_prototypes_far_below_training_get_one_explaining_line(caplog):
    """A validation run on lagging BatchNorm statistics uses few prototypes: said once, and not
    when validation and training agree or there is no validation."""
    log = EpochLog(epochs=4)
    log.on_train_begin()
    with caplog.at_level("INFO", logger="carl_tf"):
        for epoch, val in enumerate((40.0, 1.0, 1.0, 2.0)):
            log.on_epoch_begin(epoch)
            log.on_epoch_end(epoch, {"prototypes_in_use": 45.0, "val_prototypes_in_use": val})
        log.on_epoch_end(4, {"prototypes_in_use": 45.0})
    notes = [m for m in caplog.messages if m.startswith("note: ")]
    assert len(notes) == 1 and "validation uses 1.0 prototypes against 45.0" in notes[0]
    assert "moving statistics" in notes[0] and "not collapsed" in notes[0]


def test_epoch_log_prints_after_the_monitors_figures(caplog):
    model = small_carl()

    class AddsKNN(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["knn_top1"] = 50.0

    with caplog.at_level("INFO", logger="carl_tf"):
        model.fit(
            images(), batch_size=BATCH, epochs=2, verbose=0, callbacks=[AddsKNN(), EpochLog(2)]
        )
    lines = [m for m in caplog.messages if m.startswith("epoch ")]
    assert len(lines) == 2 and all("kNN 50.0%" in line for line in lines)
    assert "left" in lines[0] and "left" not in lines[1]


def _events(logdir):
    (path,) = glob.glob(f"{logdir}/train/events.out.tfevents.*")
    accumulator = event_accumulator.EventAccumulator(path, size_guidance={"tensors": 0})
    accumulator.Reload()
    return accumulator


def test_tensorboard_records_steps_epochs_from_one_and_the_untrained_knn(tmp_path):
    model = small_carl()
    board = RunTensorBoard(str(tmp_path), every_steps=2)
    board.set_model(model)
    board.write_untrained(31.5)
    model.fit(images(), batch_size=BATCH, epochs=2, verbose=0, callbacks=[board])
    events = _events(tmp_path)
    steps = {tag: [e.step for e in events.Tensors(tag)] for tag in events.Tags()["tensors"]}
    assert steps["epoch/knn_top1"] == [0]
    assert steps["epoch/loss"] == [1, 2] and steps["epoch/prototypes_in_use"] == [1, 2]
    assert steps["step/loss"] == [2, 4, 6, 8] and steps["step/learning_rate"] == [2, 4, 6, 8]
    assert steps["epoch/prototype_usage"] == [1, 2]
    assert "epoch/kl_weight" in steps  # a setting, logged once per epoch, not as validation
    histogram = tf.make_ndarray(events.Tensors("epoch/prototype_usage")[-1].tensor_proto)
    assert histogram[:, 2].sum() == pytest.approx(BATCH * STEPS)  # one count per anchor


def test_prototype_usage_counts_every_anchor_once_under_mirrored_strategy():
    """In a process of its own: TensorFlow reuses collective instance keys across the
    MirroredStrategy objects of one process, so another test's strategy would collide."""
    code = f"""
import numpy as np, tensorflow as tf
(cpu,) = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import sys; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
from test_progress import BATCH, STEPS, images, small_carl
with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
    model = small_carl()
model.fit(images(), batch_size=BATCH, epochs=1, verbose=0)
counts = np.asarray(model.prototype_usage.result())
assert counts.shape == (12,) and counts.sum() == BATCH * STEPS, counts
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_validation_logs_hold_figures_only():
    model = small_carl()
    history = model.fit(
        images(), batch_size=BATCH, epochs=1, verbose=0, validation_data=(images(32),)
    )
    assert "val_loss" in history.history and "val_kl_weight" not in history.history
    assert "kl_weight" in history.history
