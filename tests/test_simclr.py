"""SimCLR as a method of the one training path (`--method=simclr`): NT-Xent against NumPy,
global under two replicas, gradients into the whole encoder, and a run that trains, resumes,
exports and evaluates like CARL's."""

import csv
import json
import math
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import carl_tf
from carl_tf.configs import digits
from carl_tf.errors import UsageError
from carl_tf.evaluation.protocols import ProtocolSettings
from carl_tf.method import distributed, losses
from carl_tf.method.simclr import SimCLR
from carl_tf.run.config import validate_config
from tests.test_model import assert_mirrored_steps_equal_one_device, random_views, tiny_backbone


def reference_nt_xent(z_a: np.ndarray, z_b: np.ndarray, temperature: float) -> float:
    """NT-Xent written out: the (2N, 2N) cosine matrix, positive i <-> i + N, self masked."""
    z = np.concatenate([z_a, z_b]).astype(np.float64)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    similarity = z @ z.T / temperature
    n = len(z_a)
    terms = []
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        others = [similarity[i, k] for k in range(2 * n) if k != i]
        terms.append(-similarity[i, positive] + np.log(np.sum(np.exp(others))))
    return float(np.mean(terms))


@pytest.mark.parametrize("temperature", [0.2, 0.5])
def test_nt_xent_matches_numpy(temperature):
    rng = np.random.default_rng(0)
    z_a, z_b = rng.normal(size=(2, 6, 5)).astype(np.float32)
    expected = reference_nt_xent(z_a, z_b, temperature)
    np.testing.assert_allclose(float(losses.nt_xent(z_a, z_b, temperature)), expected, rtol=1e-5)


def test_nt_xent_of_one_pair_is_zero():
    # Without negatives the positive holds all of the softmax: log 1 = 0 whatever the vectors.
    z_a, z_b = np.array([[1.0, 2.0]], np.float32), np.array([[-3.0, 0.5]], np.float32)
    assert float(losses.nt_xent(z_a, z_b, 0.2)) == pytest.approx(0.0, abs=1e-6)


def test_nt_xent_of_orthogonal_pairs():
    # Two images, views identical, the images orthogonal: each anchor's row holds its positive
    # at similarity 1 and two negatives at 0, so the loss is log(1 + 2 exp(-1 / tau)).
    e = np.eye(2, dtype=np.float32)
    expected = math.log(1 + 2 * math.exp(-1 / 0.5))
    assert float(losses.nt_xent(e, e, 0.5)) == pytest.approx(expected, rel=1e-6)


def test_gathered_loss_and_gradient_under_two_replicas_match_one_device(two_replicas):
    rng = np.random.default_rng(1)
    z_a, z_b = (tf.constant(z) for z in rng.normal(size=(2, 8, 4)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch([z_a, z_b])
        single = losses.nt_xent(z_a, z_b, 0.2)
    single_grads = tape.gradient(single, [z_a, z_b])

    def halves(context):
        i = context.replica_id_in_sync_group
        return z_a[4 * i : 4 * i + 4], z_b[4 * i : 4 * i + 4]

    local = two_replicas.experimental_distribute_values_from_function(halves)

    def step(values):
        a, b = values
        with tf.GradientTape() as tape:
            tape.watch([a, b])
            loss = losses.nt_xent(distributed.gather(a), distributed.gather(b), 0.2)
            scaled = loss / distributed.num_replicas()
        return (loss, *tape.gradient(scaled, [a, b]))

    results = two_replicas.run(step, args=(local,))
    loss_list, grads_a, grads_b = (two_replicas.experimental_local_results(r) for r in results)
    for loss in loss_list:  # every replica holds the global loss
        np.testing.assert_allclose(float(loss), float(single), rtol=1e-6)
    np.testing.assert_allclose(np.concatenate(grads_a), single_grads[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.concatenate(grads_b), single_grads[1], rtol=1e-5, atol=1e-7)


def tiny_simclr(**kwargs):
    return SimCLR(tiny_backbone(), projection_hidden_units=(32,), projection_dim=16, **kwargs)


def test_objective_is_nt_xent_of_the_projections_and_trains_every_weight():
    keras.utils.set_random_seed(0)
    model = tiny_simclr(temperature=0.3)
    view_a, view_b = random_views(2)
    with tf.GradientTape() as tape:
        figures = model._objective(view_a, view_b, training=False)
    expected = reference_nt_xent(model.predict(view_a, verbose=0), model(view_b).numpy(), 0.3)
    np.testing.assert_allclose(float(figures["loss"]), expected, rtol=1e-5)
    assert set(figures) == set(SimCLR.FIGURES)
    gradients = tape.gradient(figures["loss"], model.trainable_variables)
    assert all(g is not None and np.any(np.asarray(g) != 0) for g in gradients)


def test_mirrored_step_equals_single_device_step(two_replicas):
    # 1 / temperature = 5 scales the float32 rounding of the two replicas' sums: 1e-5 is too
    # tight, while a replica-count slip would put the weights apart by the whole step (~0.1).
    assert_mirrored_steps_equal_one_device(
        two_replicas, tiny_simclr, random_views(7, batch=8), atol=1e-4
    )


def test_saves_and_loads_with_its_settings(tmp_path):
    model = tiny_simclr(temperature=0.4)
    images = random_views(3)[0]
    path = str(tmp_path / "simclr.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, SimCLR) and loaded.temperature == 0.4
    np.testing.assert_allclose(
        loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6
    )
    with pytest.raises(ValueError, match="temperature must be positive"):
        tiny_simclr(temperature=0.0)


def simclr_config(**fields):
    config = digits.get_config("smoke")
    config.update(method="simclr", epochs=2, **fields)
    return config


@pytest.mark.parametrize(
    "field, value", [("small_crops", 2), ("target_momentum", 0.99), ("symmetric", True)]
)
def test_carl_options_are_refused_for_simclr_naming_the_field(field, value):
    with pytest.raises(UsageError, match=f"{field} .* is an option of method carl"):
        validate_config(simclr_config(**{field: value}))
    validate_config(simclr_config())


def test_every_option_only_carl_takes_is_refused_for_simclr_and_off_by_default():
    """The refusal list names every CARL constructor argument a config field feeds, bar K and
    lambda (set by every preset, unused by SimCLR) and the fields small_crops switches."""
    import inspect

    from carl_tf.method.model import CARL
    from carl_tf.run.config import _CARL_OPTIONS_OFF, FIELDS, SWITCHED_BY

    carl_only = set(inspect.signature(CARL).parameters) - set(inspect.signature(SimCLR).parameters)
    options = (carl_only & set(FIELDS)) - {"num_prototypes"} - set(SWITCHED_BY)
    assert options == set(_CARL_OPTIONS_OFF)
    defaults = simclr_config()
    assert {name: defaults[name] for name in options} == _CARL_OPTIONS_OFF


def epochs_in(workdir):
    with open(os.path.join(workdir, "metrics.csv"), newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


@pytest.mark.slow  # a resume after a simulated kill: the slow tier's kind of test
def test_a_simclr_run_trains_resumes_exports_and_evaluates_like_carl(tmp_path):
    workdir = str(tmp_path / "simclr")
    result = carl_tf.pretrain(simclr_config(), workdir, verbose=0)
    with open(os.path.join(workdir, "config.json")) as f:
        recorded = json.load(f)
    assert (recorded["method"], recorded["simclr_temperature"]) == ("simclr", 0.2)
    assert epochs_in(workdir) == [0, 1, 2]
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [
        "ckpt-0001.keras",
        "ckpt-0002.keras",
    ]
    assert isinstance(keras.saving.load_model(result.model_export), SimCLR)
    served = tf.saved_model.load(result.backbone_export)
    assert list(served.signatures) == ["serving_default"]  # no assigner, no `assign`

    # The run as a kill after epoch 1 leaves it: no export, epoch 2 neither recorded nor saved.
    shutil.rmtree(os.path.join(workdir, "export"))
    os.remove(os.path.join(workdir, "checkpoints", "ckpt-0002.keras"))
    with open(os.path.join(workdir, "metrics.csv")) as f:
        rows = f.readlines()
    with open(os.path.join(workdir, "metrics.csv"), "w") as f:
        f.writelines(rows[:-1])
    first = os.path.join(workdir, "checkpoints", "ckpt-0001.keras")
    saved_at = os.stat(first).st_mtime_ns
    resumed = carl_tf.pretrain(simclr_config(), workdir, verbose=0)
    assert resumed.trained and epochs_in(workdir) == [0, 1, 2]
    with open(os.path.join(workdir, "metrics.csv")) as f:
        assert f.readlines()[:-1] == rows[:-1]  # epoch 1 kept, not trained again
    assert os.stat(first).st_mtime_ns == saved_at

    output = str(tmp_path / "probe.json")
    carl_tf.evaluate(
        workdir,
        settings=ProtocolSettings(protocols=("knn",), linear="features"),
        output=output,
        draw_plots=False,
    )
    with open(output) as f:
        record = json.load(f)
    assert record["settings"]["dataset"] == "digits"  # the run's own data and split
    # The same kNN on the same bank and queries as the run's last epoch.
    assert record["knn_top1"] == pytest.approx(resumed.knn_final, abs=0.3)
    assert record["knn_top1"] > resumed.knn_untrained + 5
