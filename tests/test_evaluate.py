"""evaluate.py end to end on the shared digits run (tests/conftest.py), then `carl_tf.evaluate` in
this process: every model form, the figures, JSON, plots, bad input."""

import json
import math
import os
import shutil

import keras
import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
from support import FINISHED_EPOCHS, error_lines, finish, start

import carl_tf
from carl_tf import data
from carl_tf.errors import CarlError, UsageError
from carl_tf.evaluation import plots
from carl_tf.evaluation.features import extract_features
from carl_tf.evaluation.loading import load_model, random_backbone
from carl_tf.evaluation.protocols import ProtocolSettings, prototype_clustering

FIGURES = (
    "knn_top1", "knn20_top1", "linear_top1", "linear_top5", "nmi", "ari", "cluster_acc",
    "kmeans_nmi", "kmeans_ari", "kmeans_acc",
)  # fmt: skip
# The shared run's two epochs at a raised learning rate lift kNN top-1 by about 27 points over
# the initialisation (20.9% -> 47.9%); the baseline, built with the run's seed, is that
# initialisation.
FAST = ["--linear=features", "--linear_epochs=3"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def workdir(finished_run_copy, tmp_path_factory):
    """A copy of the shared finished run: evaluate.py writes its plots and JSON into it."""
    return finished_run_copy(tmp_path_factory.mktemp("evaluate") / "digits")


@pytest.fixture(scope="module")
def evaluations(workdir, tmp_path_factory):
    """Each model form evaluated: form -> (stdout, JSON). The run directory by evaluate.py (the
    end-to-end run: its own dataset and split, baseline, plots into WORKDIR/plots), the other
    forms meanwhile by `carl_tf.evaluate` in this process."""
    out = tmp_path_factory.mktemp("evaluations")
    process = start(
        "evaluate.py", f"--model={workdir}", "--baseline", *FAST, f"--output={out}/workdir.json"
    )
    try:
        # The exported SavedModel on 20 px images, which evaluate resizes to its 32 px input.
        carl_tf.evaluate(
            f"{workdir}/export/backbone",
            dataset=f"npz:{_write_digits_npz(out / 'digits20.npz', size=20)}",
            holdout=0.25,
            settings=ProtocolSettings(linear="features", linear_epochs=3),
            output=str(out / "saved_model.json"),
            draw_plots=False,
        )
        # The .keras file with the full linear protocol (crop + flip), one epoch.
        carl_tf.evaluate(
            f"{workdir}/export/carl.keras",
            settings=ProtocolSettings(linear="full", linear_epochs=1),
            output=str(out / "keras.json"),
            draw_plots=False,
        )
    finally:
        code, stdout, stderr = finish(process)
    assert code == 0, f"workdir: {stderr[-3000:]}"
    results = {}
    for form in ("workdir", "saved_model", "keras"):
        with open(out / f"{form}.json") as f:
            results[form] = (stdout if form == "workdir" else "", json.load(f))
    return results


def _write_digits_npz(path, size):
    """The digits resized to `size` px, with labels, as an npz source; returns its path."""
    images, labels = data.source_arrays(data.load_source("digits", split="all", image_size=size))
    np.savez(path, x=images, y=labels)
    return path


@pytest.mark.parametrize("form", ["workdir", "saved_model", "keras"])
def test_every_protocol_writes_its_figures_and_settings(evaluations, form):
    _, record = evaluations[form]
    for name in FIGURES:
        assert math.isfinite(record[name]), name
    for name in ("knn_top1", "knn20_top1", "linear_top1", "linear_top5", "cluster_acc"):
        assert 0.0 <= record[name] <= 100.0  # percent
    assert 0.0 <= record["nmi"] <= 1.0
    settings = record["settings"]
    assert settings["model_kind"] == {"workdir": "run"}.get(form, form)
    assert settings["protocols"] == ["knn", "linear", "cluster"]
    assert settings["num_classes"] == 10 and settings["num_prototypes"] == 100
    assert (settings["knn_k"], settings["knn_temperature"]) == (200, 0.1)
    assert settings["image_size"] == "32x32"
    assert settings["num_train"] + settings["num_test"] == 1797


def test_run_defaults_come_from_its_config(evaluations, workdir):
    stdout, record = evaluations["workdir"]
    settings = record["settings"]
    assert settings["weights"] == os.path.join(workdir, "export", "carl.keras")
    assert (settings["dataset"], settings["holdout"], settings["split_seed"]) == ("digits", 0.2, 0)
    assert (settings["linear"], settings["linear_epochs"]) == ("features", 3)
    assert "random init" in stdout and "kNN top-1 % (k=200, T=0.1)" in stdout


def test_full_linear_protocol_and_resized_npz(evaluations):
    assert evaluations["keras"][1]["settings"]["linear"] == "full"
    npz = evaluations["saved_model"][1]["settings"]
    assert npz["dataset"].startswith("npz:") and npz["holdout"] == 0.25


def test_trained_backbone_beats_random_initialisation(evaluations):
    _, record = evaluations["workdir"]
    baseline = record["baseline"]
    assert set(baseline) == set(FIGURES)
    assert record["knn_top1"] > baseline["knn_top1"] + 10.0
    # No trained assigner, so no prototype figures; k-means still compares the backbones.
    assert baseline["nmi"] is None and baseline["cluster_acc"] is None
    assert math.isfinite(baseline["kmeans_nmi"])


def test_clustering_figures_equal_scikit_learn_on_the_models_assignments(evaluations, workdir):
    _, record = evaluations["workdir"]
    model = keras.models.load_model(os.path.join(workdir, "export", "carl.keras"))
    test = data.load_source("digits", split="test", holdout=0.2, seed=0)
    images, labels = data.source_arrays(test)
    assignments = extract_features(model, images).argmax(axis=1)

    assert record["nmi"] == pytest.approx(normalized_mutual_info_score(labels, assignments))
    assert record["ari"] == pytest.approx(adjusted_rand_score(labels, assignments))


def test_prototype_clustering_matches_hand_computation():
    # Six images, K = 4 prototypes, 2 classes. Argmax: prototypes 0, 0, 1, 2, 2, 3.
    probabilities = np.array(
        [
            [0.7, 0.1, 0.1, 0.1],
            [0.4, 0.3, 0.2, 0.1],
            [0.1, 0.6, 0.2, 0.1],
            [0.2, 0.1, 0.5, 0.2],
            [0.0, 0.0, 1.0, 0.0],
            [0.1, 0.2, 0.3, 0.4],
        ]
    )
    labels = np.array([0, 0, 0, 1, 1, 0])

    scores, assignments = prototype_clustering(probabilities, labels, num_classes=2)

    np.testing.assert_array_equal(assignments, [0, 0, 1, 2, 2, 3])
    # K != classes, so each prototype maps to its majority class: every image is then right.
    assert scores["cluster_acc"] == pytest.approx(100.0)
    assert scores["nmi"] == pytest.approx(normalized_mutual_info_score(labels, assignments))
    assert scores["ari"] == pytest.approx(adjusted_rand_score(labels, assignments))


@pytest.mark.parametrize("name", ["training_curves.png", "prototypes_vs_classes.png"])
def test_plots_are_valid_pngs_in_the_workdir(evaluations, workdir, name):
    path = os.path.join(workdir, "plots", name)
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        width, height = image.size
    assert 1000 <= width <= 3000 and 500 <= height <= 2000
    assert 20_000 < os.path.getsize(path) < 3_000_000


def test_prototype_heatmap_title_gives_the_share_against_shuffled_labels():
    labels = np.arange(40) % 4
    # One image per prototype: every image sits with its own class, and so would shuffled ones.
    figure = plots.prototypes_vs_classes_figure(
        np.arange(40), labels, num_prototypes=100, num_classes=4
    )
    assert figure.get_suptitle().endswith(
        "100% of the images sit in a prototype whose "
        "majority class is theirs (100% with the labels shuffled)"
    )
    # One prototype per class, as many as classes: no chance figure.
    figure = plots.prototypes_vs_classes_figure(labels, labels, num_prototypes=4, num_classes=4)
    assert figure.get_suptitle().endswith(
        "100% of the images sit in a prototype whose majority class is theirs"
    )


def test_prototype_heatmap_draws_a_thousand_prototypes(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 100, 5000)
    assignments = np.where(rng.random(5000) < 0.7, labels * 10, rng.integers(0, 1000, 5000))
    path = str(tmp_path / "heatmap.png")

    plots.plot_prototypes_vs_classes(
        assignments, labels, path, num_prototypes=1000, num_classes=100
    )

    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] >= 1500


def test_run_without_export_uses_its_newest_checkpoint(workdir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(os.path.join(workdir, "checkpoints"), run / "checkpoints")
    shutil.copy(os.path.join(workdir, "config.json"), run)

    model = load_model(str(run))

    assert model.weights == str(run / "checkpoints" / f"ckpt-{FINISHED_EPOCHS:04d}.keras")
    shutil.rmtree(run / "checkpoints")
    with pytest.raises(UsageError, match="no model yet"):
        load_model(str(run))


def test_baseline_of_a_keras_file_outside_a_run_is_a_fresh_clone(workdir, tmp_path):
    path = shutil.copy(os.path.join(workdir, "export", "carl.keras"), tmp_path / "model.keras")
    model = load_model(str(path))

    baseline = random_backbone(model, seed=0)

    assert model.run is None and model.num_prototypes == 100
    assert [w.shape for w in baseline.weights] == [w.shape for w in model.backbone.weights]
    kernel = next(i for i, w in enumerate(baseline.weights) if "kernel" in w.path)
    assert not np.allclose(baseline.weights[kernel], model.backbone.weights[kernel])


def test_saved_model_outside_a_run_has_no_architecture_for_a_baseline(workdir, tmp_path):
    shutil.copytree(os.path.join(workdir, "export", "backbone"), tmp_path / "backbone")
    model = load_model(str(tmp_path / "backbone"))

    assert model.run is None and model.num_prototypes == 100
    with pytest.raises(UsageError, match="architecture"):
        random_backbone(model, seed=0)


def _keras_model_file(path, input_shape):
    inputs = keras.Input(input_shape)
    keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(inputs)).save(path)
    return path


@pytest.fixture(scope="module")
def bad_runs(workdir):
    """evaluate.py's process-level mistakes, run side by side: case -> (code, out, err, message).

    A library error (no model) and a flag absl refuses (unknown flag): each becomes one
    `error:` line and a non-zero exit code. The other bad inputs are checked where their
    messages are made (`test_bad_input_raises_a_one_line_error`).
    """
    cases = {
        "no model": (["--model=/no/such/model"], "/no/such/model"),
        "unknown flag": (
            [f"--model={workdir}/export/carl.keras", "--no_such_flag=1"],
            "no_such_flag",
        ),
    }
    processes = {
        case: start("evaluate.py", *args, "--plots=false") for case, (args, _) in cases.items()
    }
    return {case: (*finish(processes[case]), cases[case][1]) for case in cases}


@pytest.mark.parametrize("case", ["no model", "unknown flag"])
def test_bad_input_gives_one_line_error(bad_runs, case):
    code, _, stderr, message = bad_runs[case]
    assert code != 0
    assert "Traceback" not in stderr
    errors = error_lines(stderr)
    assert len(errors) == 1 and errors[0].startswith("error: "), stderr[-2000:]
    assert message in errors[0]


@pytest.mark.parametrize(
    "case, message",
    [
        ("no model", "/no/such/model"),
        ("grey model", "1-channel"),
        ("non-square model", "16x24"),
        ("unlabelled", "no labels"),
        ("unknown protocol", "'kmeans'"),
    ],
)
def test_bad_input_raises_a_one_line_error(workdir, tmp_path, case, message):
    """What evaluate.py turns into its `error:` line, raised where it is made."""
    np.savez(tmp_path / "unlabelled.npz", x=np.zeros((20, 32, 32, 3), np.uint8))
    model = f"{workdir}/export/carl.keras"
    calls = {
        "no model": lambda: carl_tf.evaluate("/no/such/model", draw_plots=False),
        "grey model": lambda: carl_tf.evaluate(
            _keras_model_file(str(tmp_path / "grey.keras"), (32, 32, 1)), dataset="digits"
        ),
        "non-square model": lambda: carl_tf.evaluate(
            _keras_model_file(str(tmp_path / "wide.keras"), (16, 24, 3)), dataset="digits"
        ),
        "unlabelled": lambda: carl_tf.evaluate(
            model, dataset=f"npz:{tmp_path / 'unlabelled.npz'}", draw_plots=False
        ),
        "unknown protocol": lambda: ProtocolSettings(protocols=("knn", "kmeans")).check(),
    }
    with pytest.raises(CarlError) as raised:
        calls[case]()
    assert message in str(raised.value) and "\n" not in str(raised.value)
