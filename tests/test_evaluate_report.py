"""What an evaluation reports: probe progress, evaluation.json's provenance, the kNN curve, the baseline."""

import datetime
import json
import logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from matplotlib.lines import Line2D
from support import FINISHED_EPOCHS

import carl_tf
from carl_tf.evaluation import plots
from carl_tf.evaluation.linear_eval import linear_probe_on_features
from carl_tf.run.precision import resolve_precision

EPOCHS = FINISHED_EPOCHS


@pytest.fixture(scope="module")
def workdir(finished_run_copy, tmp_path_factory):
    """A copy of the shared two-epoch digits run, trained as train.py trains (its own process,
    its own policy)."""
    return finished_run_copy(tmp_path_factory.mktemp("report") / "digits")


@pytest.fixture(scope="module")
def knn_cluster(workdir, tmp_path_factory):
    """The JSON record of the run evaluated with kNN and clustering, beside its baseline."""
    output = str(tmp_path_factory.mktemp("evaluation") / "evaluation.json")
    carl_tf.evaluate(
        workdir, protocols=("knn", "cluster"), baseline=True, output=output, draw_plots=False
    )
    with open(output) as f:
        return json.load(f)


def _untrained_knn(workdir):
    with open(os.path.join(workdir, "metrics.csv")) as f:
        header, first = f.readline().strip().split(","), f.readline().strip().split(",")
    row = dict(zip(header, first))
    assert row["epoch"] == "0"
    return float(row["knn_top1"])


def test_linear_probe_logs_its_progress_in_at_most_ten_lines(caplog):
    rng = np.random.default_rng(0)
    features, labels = rng.normal(size=(64, 8)).astype(np.float32), rng.integers(0, 3, 64)

    with caplog.at_level(logging.INFO, logger="carl_tf"):
        linear_probe_on_features(
            features, labels, features, labels, num_classes=3, epochs=25, batch_size=32
        )

    records = [r for r in caplog.records if r.getMessage().startswith("linear probe")]
    assert 3 <= len(records) <= 10
    assert records[-1].getMessage().startswith("linear probe epoch 25/25: train top-1 ")
    assert records[-1].getMessage().endswith("%")
    assert {r.name for r in records} == {"carl_tf.evaluation.linear_eval"}


def test_full_probe_logs_progress_and_records_only_its_settings(workdir, tmp_path, caplog):
    output = str(tmp_path / "linear.json")
    with caplog.at_level(logging.INFO, logger="carl_tf"):
        carl_tf.evaluate(
            workdir,
            settings=carl_tf.evaluation.protocols.ProtocolSettings(
                protocols=("linear",), linear="full", linear_epochs=2
            ),
            output=output,
            draw_plots=False,
        )
    with open(output) as f:
        settings = json.load(f)["settings"]

    progress = [r for r in caplog.records if r.getMessage().startswith("linear probe epoch")]
    assert [r.getMessage().split(":")[0] for r in progress] == [
        "linear probe epoch 1/2",
        "linear probe epoch 2/2",
    ]
    assert {r.name for r in progress} == {"carl_tf.evaluation.linear_eval"}
    assert (settings["linear"], settings["linear_epochs"]) == ("full", 2)
    assert not [name for name in settings if name.startswith("knn")]


def test_settings_are_those_of_the_protocols_run(knn_cluster):
    settings = knn_cluster["settings"]

    assert settings["protocols"] == ["knn", "cluster"]
    assert (settings["knn_k"], settings["knn_temperature"]) == (200, 0.1)
    assert not [name for name in settings if name.startswith("linear")]


def test_record_says_what_was_evaluated_with_what(knn_cluster, workdir):
    settings = knn_cluster["settings"]

    assert settings["versions"] == {
        "carl_tf": carl_tf.__version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
    }
    evaluated = datetime.datetime.fromisoformat(settings["evaluated_at"])
    assert evaluated.utcoffset() == datetime.timedelta(0)
    age = datetime.datetime.now(datetime.timezone.utc) - evaluated
    assert datetime.timedelta(0) <= age < datetime.timedelta(hours=1)
    assert settings["weights"] == os.path.join(workdir, "export", "carl.keras")
    assert settings["weights_epoch"] == EPOCHS
    # train.py resolved --precision=auto on this machine; the loaded model computes in that.
    assert settings["dtype_policy"] == resolve_precision("auto")


def test_a_checkpoint_records_the_epoch_it_holds(workdir, tmp_path):
    checkpoint = os.path.join(workdir, "checkpoints", "ckpt-0001.keras")

    result = carl_tf.evaluate(
        checkpoint, protocols=("knn",), output=str(tmp_path / "e.json"), draw_plots=False
    )

    assert result.settings["weights"] == checkpoint
    assert result.settings["weights_epoch"] == 1


def test_baseline_is_the_runs_untrained_network(knn_cluster, workdir):
    assert knn_cluster["baseline"]["knn_top1"] == pytest.approx(_untrained_knn(workdir), abs=0.01)
    assert knn_cluster["settings"]["baseline_dtype_policy"] == resolve_precision("auto")
    assert keras.mixed_precision.dtype_policy().name == "float32"  # restored afterwards


def test_knn_curve_marks_measured_epochs_without_solid_lines_across_gaps():
    rows = [{"epoch": str(e), "loss": "" if e == 0 else "1.0"} for e in range(11)]
    for e, knn in ((0, 20.0), (5, 40.0), (10, 50.0)):
        rows[e]["knn_top1"] = str(knn)

    figure = plots.training_curves_figure(rows, num_prototypes=10)

    (ax,) = [a for a in figure.axes if a.get_title().startswith("kNN")]
    lines = [line for line in ax.get_lines() if isinstance(line, Line2D)]
    marked = [line for line in lines if line.get_marker() not in (None, "None", "")]
    assert [list(line.get_xdata()) for line in marked] == [[0, 5, 10]]
    assert list(marked[0].get_ydata()) == [20.0, 40.0, 50.0]
    for line in lines:
        if line.get_linestyle() == "-":  # solid only between consecutive epochs
            assert np.all(np.diff(line.get_xdata()) == 1)


def test_few_prototypes_in_inference_mode_get_a_note():
    from carl_tf.evaluation.evaluate import _few_prototypes_note

    assert _few_prototypes_note(np.arange(300) % 50, num_prototypes=100, fraction=0.1) == []
    (note,) = _few_prototypes_note(np.zeros(300, int), num_prototypes=100, fraction=0.1)
    assert "only 1 of 100 prototypes" in note and "BatchNorm" in note
    # The run's own collapse_fraction: 50 of 100 in use is few when it asks for 60 %.
    (note,) = _few_prototypes_note(np.arange(300) % 50, num_prototypes=100, fraction=0.6)
    assert "only 50 of 100 prototypes" in note


def test_a_cluster_accuracy_that_is_mostly_chance_gets_a_note():
    from carl_tf.evaluation.clustering import chance_cluster_accuracy
    from carl_tf.evaluation.evaluate import _chance_cluster_note

    labels = np.arange(40) % 4
    # One image per prototype: majority vote is right for every image, whatever the labels.
    assert chance_cluster_accuracy(np.arange(40), labels, 100, num_classes=4) == 100.0
    # One cluster: majority vote answers the largest class, 25 % for any shuffle.
    assert chance_cluster_accuracy(np.zeros(40, int), labels, 100, num_classes=4) == 25.0

    # 28 prototypes drawn for 40 images, as a 3-epoch run on 404 images of 4 classes had.
    spread = np.random.default_rng(0).integers(0, 28, 40)
    chance = chance_cluster_accuracy(spread, labels, 100, num_classes=4)
    (note,) = _chance_cluster_note(spread, labels, num_prototypes=100, num_classes=4)
    assert chance > 50 and f"{chance:.2f}% with the labels shuffled" in note and "ARI" in note
    # Eight prototypes for 4000 images: chance stays near the largest class's 25 %.
    many = np.arange(4000) % 4
    assert _chance_cluster_note(np.arange(4000) % 8, many, 100, 4) == []
    assert _chance_cluster_note(spread, labels, 4, 4) == []  # one-to-one (Hungarian): no note


def test_the_json_record_holds_figures_without_float_noise(tmp_path):
    from carl_tf.evaluation.report import write_json

    path = tmp_path / "evaluation.json"
    # 100 * 0.5198 (a mean of 5000 hits, in percent) is 51.980000000000004 in float arithmetic.
    write_json(str(path), {"knn_top1": 100 * 0.5198, "nested": {"x": [0.1 + 0.2, 3, None]}})
    text = path.read_text()
    assert '"knn_top1": 51.98,' in text and "0.30000000000000004" not in text
    assert json.loads(text)["nested"] == {"x": [0.3, 3, None]}
