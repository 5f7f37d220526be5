"""experiments/simclr_baseline.py: NT-Xent against NumPy, global under two replicas, end to end."""

import csv
import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import carl_tf
from carl_tf.evaluation.protocols import ProtocolSettings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "experiments", "simclr_baseline.py")
# The scripts set their own TensorFlow log level, as a user's shell would leave it to.
ENV = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


def _load_script():
    spec = importlib.util.spec_from_file_location("simclr_baseline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


simclr = _load_script()


def reference_nt_xent(z_a: np.ndarray, z_b: np.ndarray, temperature: float) -> float:
    """NT-Xent written out: the (2N, 2N) cosine matrix, positive i <-> i + N, self masked."""
    z = np.concatenate([z_a, z_b]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    similarity = z @ z.T / temperature
    n = len(z_a)
    losses = []
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        others = [similarity[i, k] for k in range(2 * n) if k != i]
        losses.append(-similarity[i, positive] + np.log(np.sum(np.exp(others))))
    return float(np.mean(losses))


@pytest.mark.parametrize("temperature", [0.2, 0.5])
def test_nt_xent_matches_numpy(temperature):
    rng = np.random.default_rng(0)
    z_a, z_b = rng.normal(size=(2, 6, 5)).astype(np.float32)
    expected = reference_nt_xent(z_a, z_b, temperature)
    got = float(simclr.nt_xent(z_a, z_b, temperature))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_nt_xent_of_one_pair_is_zero():
    # Without negatives the positive holds all of the softmax: log 1 = 0 whatever the vectors.
    z_a, z_b = np.array([[1.0, 2.0]], np.float32), np.array([[-3.0, 0.5]], np.float32)
    assert float(simclr.nt_xent(z_a, z_b, 0.2)) == pytest.approx(0.0, abs=1e-6)


def test_nt_xent_of_orthogonal_pairs():
    # Two images, views identical, the images orthogonal: each anchor's row holds its positive
    # at similarity 1 and two negatives at 0, so the loss is log(1 + 2 exp(-1 / tau)).
    e = np.eye(2, dtype=np.float32)
    expected = math.log(1 + 2 * math.exp(-1 / 0.5))
    assert float(simclr.nt_xent(e, e, 0.5)) == pytest.approx(expected, rel=1e-6)


def test_global_loss_and_gradient_under_two_replicas_match_one_device(two_replicas):
    rng = np.random.default_rng(1)
    z_a, z_b = rng.normal(size=(2, 8, 4)).astype(np.float32)
    z_a, z_b = tf.constant(z_a), tf.constant(z_b)
    with tf.GradientTape() as tape:
        tape.watch([z_a, z_b])
        single = simclr.nt_xent(z_a, z_b, 0.2)
    single_grads = tape.gradient(single, [z_a, z_b])

    def halves(context):
        i = context.replica_id_in_sync_group
        return z_a[4 * i : 4 * i + 4], z_b[4 * i : 4 * i + 4]

    local = two_replicas.experimental_distribute_values_from_function(halves)

    def step(values):
        a, b = values
        with tf.GradientTape() as tape:
            tape.watch([a, b])
            loss = simclr.nt_xent(simclr.gather_replicas(a), simclr.gather_replicas(b), 0.2)
            scaled = loss / tf.distribute.get_replica_context().num_replicas_in_sync
        return (loss, *tape.gradient(scaled, [a, b]))

    results = two_replicas.run(step, args=(local,))
    losses, grads_a, grads_b = (two_replicas.experimental_local_results(r) for r in results)
    for loss in losses:  # every replica holds the global loss
        np.testing.assert_allclose(float(loss), float(single), rtol=1e-6)
    np.testing.assert_allclose(np.concatenate(grads_a), single_grads[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.concatenate(grads_b), single_grads[1], rtol=1e-5, atol=1e-7)


def _run(*args, timeout=600):
    done = subprocess.run(
        [sys.executable, *args], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_script_trains_exports_and_evaluate_reads_the_run(tmp_path):
    workdir = str(tmp_path / "simclr")
    _run(SCRIPT, "--config=digits:smoke", "--epochs=1", f"--workdir={workdir}")

    with open(os.path.join(workdir, "config.json")) as f:
        config = json.load(f)
    assert (config["method"], config["temperature"], config["epochs"]) == ("simclr", 0.2, 1)
    with open(os.path.join(workdir, "metrics.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["epoch"]) for row in rows] == [0, 1]
    assert rows[0]["loss"] == "" and 0 <= float(rows[0]["knn_top1"]) <= 100
    # A batch of 64 pairs: an untrained encoder's NT-Xent is near log(127) = 4.84.
    assert 0 < float(rows[1]["loss"]) < 6 and 0 <= float(rows[1]["knn_top1"]) <= 100
    assert os.path.exists(os.path.join(workdir, "export", "backbone", "saved_model.pb"))

    # evaluate.py's job, in this process (tests/test_evaluate.py runs the program itself).
    output = str(tmp_path / "probe.json")
    carl_tf.evaluate(
        workdir,
        settings=ProtocolSettings(protocols=("knn", "linear"), linear="features", linear_epochs=3),
        output=output,
        draw_plots=False,
    )
    with open(output) as f:
        record = json.load(f)
    assert record["settings"]["model_kind"] == "run"
    assert record["settings"]["dataset"] == "digits"  # the run's own data and split
    assert record["settings"]["weights_epoch"] == 1
    assert 0 <= record["linear_top1"] <= 100
    # The same kNN (k 200, T 0.1) on the same bank and queries as the run's last epoch.
    assert record["knn_top1"] == pytest.approx(float(rows[1]["knn_top1"]), abs=0.3)
