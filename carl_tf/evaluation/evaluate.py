"""`carl_tf.evaluate`: kNN, linear probe and clustering of a model or run, as one Python call.

evaluate.py (and `carl-evaluate`) map their flags to this function; a notebook calls it directly.
Figures follow CARL's Table 1: accuracies in percent, NMI and ARI as fractions.
"""

import collections
import dataclasses
import datetime
import logging
import os
import time

import keras
import numpy as np
import tensorflow as tf

import carl_tf
from carl_tf import data
from carl_tf.errors import RunDirectoryError, UsageError
from carl_tf.evaluation import plots
from carl_tf.evaluation.clustering import chance_cluster_accuracy
from carl_tf.evaluation.linear_eval import augments_images
from carl_tf.evaluation.loading import LoadedModel, load_model, random_backbone
from carl_tf.evaluation.protocols import PROTOCOLS, ProtocolSettings, run_protocols
from carl_tf.evaluation.report import UnsavedResults, figure_labels, format_table, write_json
from carl_tf.evaluation.settings import COLLAPSE_FRACTION

logger = logging.getLogger(__name__)

_BASELINE_NOTE = (
    "prototype figures of the random baseline are n/a: it has no trained assigner to cluster "
    "with; its k-means rows compare the two backbones."
)


@dataclasses.dataclass(frozen=True)
class EvaluationResult:
    """Everything one evaluation measured, as evaluation.json records it.

    Attributes:
        figures: Figure name -> value of the model (None where a figure does not apply).
        baseline: The same figures of a randomly initialised backbone, or None.
        settings: The model, data and protocol settings the figures were measured with, and
            their provenance: the versions, the time, the epoch the weights hold, and the
            dtype policy the model computes in.
        notes: Sentences explaining figures that are n/a.
        labels: Row label of every figure, naming its settings.
        assignments: The model's argmax prototype `(N_test,)` of every test image, or None.
        test_labels: Classes `(N_test,)` of the test images.
        output: The JSON file written, or None.
        plots: The PNG files drawn.
    """

    figures: dict
    baseline: dict | None
    settings: dict
    notes: list
    labels: dict
    assignments: np.ndarray | None = dataclasses.field(repr=False, default=None)
    test_labels: np.ndarray | None = dataclasses.field(repr=False, default=None)
    output: str | None = None
    plots: tuple = ()

    def table(self) -> str:
        """The figures as a plain-text table, the model beside its baseline."""
        columns = {"model": self.figures}
        if self.baseline is not None:
            columns["random init"] = self.baseline
        return format_table(columns, self.labels)

    def record(self) -> dict:
        """The JSON record: the model's figures, settings, notes and the baseline's figures."""
        record = {**self.figures, "settings": self.settings, "notes": self.notes}
        if self.baseline is not None:
            record["baseline"] = self.baseline
        return record


def evaluate(
    model: str | LoadedModel,
    *,
    dataset: str | None = None,
    test_dataset: str | None = None,
    holdout: float | None = None,
    split_seed: int | None = None,
    data_dir: str | None = None,
    download: bool = False,
    protocols=PROTOCOLS,
    settings: ProtocolSettings | None = None,
    baseline: bool = False,
    output: str | None = None,
    plots_dir: str | None = None,
    draw_plots: bool | None = None,
) -> EvaluationResult:
    """Evaluates a model, its run's own data and split by default.

    Args:
        model: A train.py workdir, an exported SavedModel, a `.keras` file, or a `LoadedModel`.
        dataset: Labelled source fitted on (TFDS: its train split). Default: the run's.
        test_dataset: Score on this source instead of held-out images of `dataset`.
        holdout: Fraction of a digits/folder/npz `dataset` held out for scoring. Default: the
            run's holdout on its own dataset, else 0.2.
        split_seed: Seed of the holdout split. Default: the run's, else 0.
        data_dir: TFDS data directory. Default: the run's.
        download: Let TFDS download a missing dataset.
        protocols: Names from `PROTOCOLS`; ignored when `settings` is given.
        settings: Protocol settings; default `ProtocolSettings(protocols)` with the run's seed.
        baseline: Also evaluate a randomly initialised backbone of the same architecture,
            drawn with `settings.seed` under the model's dtype policy: with the run's seed it
            is the run's untrained network, whose kNN is metrics.csv's epoch 0.
        output: JSON file to write. Default: WORKDIR/evaluation.json for a model of a run.
        plots_dir: Where the PNGs go. Default: WORKDIR/plots for a model of a run.
        draw_plots: Draw the training curves and the prototype-vs-class heatmap. Default: on
            for a model of a run.

    Returns:
        The figures, settings and notes.

    Raises:
        UsageError: For a model, source or setting that cannot be evaluated.
    """
    started = time.time()
    evaluated_at = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    if settings is None:
        seed = (loaded.run_config or {}).get("seed", 0)
        # With the run's seed the baseline draws the weights train.py started from, as train.py
        # seeds and builds the backbone first (see `_baseline_backbone` for its dtype policy).
        settings = ProtocolSettings(protocols=tuple(protocols), seed=seed)
    settings.check()
    plots_dir = _plots_dir(loaded, draw_plots, plots_dir)
    train, test, data_settings = load_evaluation_data(
        loaded,
        dataset=dataset,
        test_dataset=test_dataset,
        holdout=holdout,
        split_seed=split_seed,
        data_dir=data_dir,
        download=download,
    )
    num_classes = data_settings["num_classes"]
    policy = _dtype_policy(loaded.backbone)
    logger.info(
        "evaluating %s on %s: %d training / %d test images, %d classes",
        loaded.weights,
        data_settings["test_dataset"],
        len(train[1]),
        len(test[1]),
        num_classes,
    )
    native_size = data_settings.pop("native_size")
    augment = augments_images(native_size)
    evaluation = run_protocols(
        loaded.backbone,
        loaded.assigner,
        train,
        test,
        num_classes=num_classes,
        settings=settings,
        augment=augment,
    )
    notes, baseline_figures = [], None
    full_linear = "linear" in settings.protocols and settings.linear == "full"
    if full_linear and not augment:
        notes.append(_unaugmented_probe_note(native_size, data_settings["image_size"]))
    clustering = "cluster" in settings.protocols
    if clustering and loaded.assigner is None:
        notes.append(
            "prototype figures are n/a: the model has no assigner (a SimCLR run, a bare "
            "backbone, or a SavedModel without the 'assign' signature)."
        )
    if evaluation.assignments is not None:
        fraction = (loaded.run_config or {}).get("collapse_fraction", COLLAPSE_FRACTION)
        notes += _few_prototypes_note(evaluation.assignments, loaded.num_prototypes, fraction)
        notes += _chance_cluster_note(
            evaluation.assignments, test[1], loaded.num_prototypes, num_classes
        )
    notes += _small_data_notes(settings, data_settings, num_classes, len(train[1]))
    baseline_policy = None
    if baseline:
        logger.info("evaluating the randomly initialised baseline")
        backbone = _baseline_backbone(loaded, settings.seed, policy)
        baseline_policy = _dtype_policy(backbone)
        baseline_figures = run_protocols(
            backbone,
            None,
            train,
            test,
            num_classes=num_classes,
            settings=settings,
            augment=augment,
        ).figures
        if clustering:
            notes.append(_BASELINE_NOTE)
        if "knn" in settings.protocols:
            notes += _untrained_knn_note(loaded, settings, data_settings, policy)
    record_settings = {
        "model": loaded.path,
        "model_kind": loaded.kind,
        "weights": loaded.weights,
        "weights_epoch": _weights_epoch(loaded),
        "dtype_policy": policy,
        **data_settings,
        "num_prototypes": loaded.num_prototypes,
        **settings.applied(baseline=baseline),
        **({"linear_augment": augment} if full_linear else {}),
        "baseline": baseline,
        **({"baseline_dtype_policy": baseline_policy} if baseline else {}),
        "versions": {
            "carl_tf": carl_tf.__version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        "evaluated_at": evaluated_at,
        "seconds": round(time.time() - started, 1),
    }
    result = EvaluationResult(
        figures=evaluation.figures,
        baseline=baseline_figures,
        settings=record_settings,
        notes=notes,
        labels=figure_labels(settings, loaded.num_prototypes, num_classes),
        assignments=evaluation.assignments,
        test_labels=test[1],
    )
    output = output or (loaded.run and os.path.join(loaded.run.path, "evaluation.json"))
    # A disk that refuses the files must not cost the figures: the error carries them.
    if output:
        try:
            write_json(output, result.record())
        except RunDirectoryError as error:
            raise _unsaved(
                result, f"figures not saved: {error.problem}", error.fix, error.fields
            ) from error
        result = dataclasses.replace(result, output=os.path.abspath(output))
    if plots_dir:
        try:
            drawn = _draw_plots(loaded, result, data_settings, plots_dir)
        except OSError as error:
            raise _unsaved(
                result,
                f"plots not drawn: cannot write to {error.filename or plots_dir}: "
                f"{error.strerror or error}",
                "pass plots_dir=DIR or draw_plots=False",
                ("plots_dir", "draw_plots"),
            ) from error
        result = dataclasses.replace(result, plots=tuple(drawn))
    return result


def _unsaved(
    result: EvaluationResult, problem: str, fix: str, fields: tuple[str, ...]
) -> UnsavedResults:
    """The error of a file not written, carrying the figures so they are still shown."""
    text = "\n".join([result.table(), *(f"note: {note}" for note in result.notes)])
    return UnsavedResults(problem, fix, fields, result, text)


def _few_prototypes_note(
    assignments: np.ndarray, num_prototypes: int, fraction: float
) -> list[str]:
    """A note when inference-mode assignments use fewer than `fraction` of min(K, images)
    prototypes (the run's collapse_fraction), naming the likely cause.

    Inference normalizes with BatchNorm's moving statistics; after a short run (or one whose
    batch statistics moved fast) they lag the batches the assigner trained on, and the argmax
    collapses onto a few prototypes although training used many.
    """
    used = len(np.unique(assignments))
    if used >= fraction * min(num_prototypes, len(assignments)):
        return []
    return [
        f"the prototype figures rest on only {used} of {num_prototypes} prototypes in use for "
        f"{len(assignments)} test images: either the run collapsed (see prototypes_in_use in "
        "metrics.csv) or BatchNorm's moving statistics do not yet match the training batches "
        "(a short run); train longer before trusting them."
    ]


def _chance_cluster_note(
    assignments: np.ndarray, labels: np.ndarray, num_prototypes: int, num_classes: int
) -> list[str]:
    """A note when the prototype cluster accuracy is mostly chance.

    With K != classes each prototype is scored as its majority class among the test images, so
    with many prototypes in use for few images the figure is high whatever they mean. The note
    gives the accuracy of the same assignments with the labels shuffled, when it lies more than
    5 points above always answering the largest class.
    """
    if num_prototypes == num_classes:
        return []
    chance = chance_cluster_accuracy(assignments, labels, num_prototypes, num_classes=num_classes)
    largest = 100.0 * np.bincount(labels, minlength=num_classes).max() / len(labels)
    if chance <= largest + 5.0:
        return []
    used = len(np.unique(assignments))
    return [
        f"prototype cluster acc maps each of the {used} prototypes in use to its majority class "
        f"among {len(labels)} test images ({len(labels) / used:.1f} per prototype): the same "
        f"assignments score {chance:.2f}% with the labels shuffled at random, so read it "
        "against that figure, or read the ARI, which is corrected for chance."
    ]


def _unaugmented_probe_note(native_size: tuple[int, int], image_size: str) -> str:
    """The note of a full linear protocol run without its crop and flip (tiny source images)."""
    return (
        "linear (full) trained without the protocol's random crop and flip: the images are "
        f"upscaled from {native_size[0]}x{native_size[1]} to {image_size}, where a shift of 1/8 "
        "of the image moves every stroke by a whole source pixel and a mirrored image is "
        "another shape, unlike the scored images (on digits: 59.89% top-1 with them, 82.45% "
        "without, as the features mode)."
    )


def _small_data_notes(
    settings: ProtocolSettings, data_settings: dict, num_classes: int, num_train: int
) -> list[str]:
    """Notes on figures that mean little on this data: top-5 of few classes, a kNN vote wider
    than a class, and images scored that the backbone pretrained on."""
    notes = []
    if "linear" in settings.protocols and num_classes <= 5:
        notes.append(
            f"linear top-5 is n/a: with {num_classes} classes every label is among the top 5."
        )
    per_class = num_train / max(num_classes, 1)
    if "knn" in settings.protocols and settings.knn_k > per_class:
        notes.append(
            f"kNN with k = {settings.knn_k} votes over more neighbours than a class has images "
            f"in the bank ({num_train} images, {per_class:.0f} per class on average), so it "
            f"leans to the largest classes; the k = 20 figure is the one to read (or set "
            f"knn_k below {per_class:.0f})."
        )
    if data_settings.get("scores_pretraining_images"):
        notes.append(
            "the run held out no images (holdout 0), so the scored images were among those it "
            "pretrained on: the figures show how well its features separate images it has seen, "
            "not how they generalise. Train with holdout 0.1 (or score on a test_dataset) "
            "for held-out figures."
        )
    return notes


def load_evaluation_data(
    model: LoadedModel,
    *,
    dataset: str | None = None,
    test_dataset: str | None = None,
    holdout: float | None = None,
    split_seed: int | None = None,
    data_dir: str | None = None,
    download: bool = False,
):
    """Labelled training and test arrays at the model's input size, and how they were chosen.

    Returns:
        `(images, labels)` to fit on, `(images, labels)` to score on, and the data settings
        for the JSON record.
    """
    config = model.run_config or {}
    dataset = dataset or config.get("dataset")
    if not dataset:
        raise UsageError(
            f"{model.path} is not part of a train.py run", "pass dataset", fields=("dataset",)
        )
    local = data.splits_by_holdout(dataset)
    own_dataset = dataset == config.get("dataset")
    if holdout is None:  # a TFDS dataset brings a test split; a run's holdout is carved anyway
        holdout = config.get("holdout", 0.0) if own_dataset else (0.2 if local else 0.0)
    split_seed = split_seed if split_seed is not None else config.get("split_seed", 0)
    if test_dataset:
        holdout = 0.0
    elif local and holdout <= 0:
        if own_dataset and model.run_config:
            raise UsageError(
                f"the run held out no images of {dataset} (holdout 0), so every image was in "
                "its pretraining",
                "pass holdout=0.2 to score on a fraction of those (a note says they are not "
                "held out), or test_dataset=SOURCE for images it has not seen",
                fields=("holdout", "test_dataset"),
            )
        raise UsageError(
            f"evaluating on {dataset} needs held-out images",
            "pass holdout (e.g. 0.2) or test_dataset",
            fields=("holdout", "test_dataset"),
        )
    options = dict(
        data_dir=data_dir or config.get("data_dir") or None,
        image_size=_image_size(model),
        seed=split_seed,
        download=download,
    )
    # TFDS sources have train and test splits; the others are split by the holdout, or used
    # whole when `test_dataset` provides the scored images.
    train_split = "all" if local and test_dataset else "train"
    train_source = data.load_source(dataset, split=train_split, holdout=holdout, **options)
    test_name = test_dataset or dataset
    test_split = "all" if test_dataset and data.splits_by_holdout(test_dataset) else "test"
    test_source = data.load_source(test_name, split=test_split, holdout=holdout, **options)
    names = (train_source.class_names, test_source.class_names)
    if None not in names and names[0] != names[1]:
        raise UsageError(
            f"the class folders of {dataset} and {test_name} differ, so their labels do not "
            "match; give both the same class sub-folders"
        )
    train, test = data.labelled_arrays(train_source), data.labelled_arrays(test_source)
    settings = {
        "dataset": dataset,
        "train_split": train_split,
        "test_dataset": test_name,
        "test_split": test_split,
        "holdout": holdout if (local or holdout) and not test_dataset else None,
        # A run that held out nothing, scored on a holdout of its own data, was scored on
        # images it pretrained on.
        "scores_pretraining_images": bool(
            own_dataset and model.run_config and not config.get("holdout") and not test_dataset
        ),
        "split_seed": split_seed,
        "image_size": "x".join(map(str, train_source.image_shape[:2])),
        "native_size": train_source.native_size,
        "num_train": len(train[1]),
        "num_test": len(test[1]),
        "num_classes": max(train_source.num_classes, test_source.num_classes),
        "class_names": list(names[1] or names[0] or []) or None,
    }
    return train, test, settings


def _draw_plots(
    model: LoadedModel, result: EvaluationResult, data_settings: dict, plots_dir: str
) -> list[str]:
    """Draws the run's training curves and the prototype-vs-class heatmap into `plots_dir`."""
    os.makedirs(plots_dir, exist_ok=True)
    written = []
    rows = model.run.read_metrics() if model.run else []
    if rows:
        path = os.path.join(plots_dir, "training_curves.png")
        plots.plot_training_curves(
            rows, path, num_prototypes=model.num_prototypes, title=model.run.path
        )
        written.append(path)
    if result.assignments is not None:
        path = os.path.join(plots_dir, "prototypes_vs_classes.png")
        class_names = data_settings["class_names"]
        plots.plot_prototypes_vs_classes(
            result.assignments,
            result.test_labels,
            path,
            num_prototypes=model.num_prototypes,
            num_classes=data_settings["num_classes"],
            class_names=tuple(class_names) if class_names else None,
            title=f"{model.weights} on the {data_settings['test_dataset']} test images",
        )
        written.append(path)
    return written


def _dtype_policy(backbone: keras.Model) -> str | None:
    """The Keras dtype policy the backbone computes in: that of most of its layers with weights.

    The backbone model's own policy does not say: a backbone built under `mixed_bfloat16` can
    keep float32 for the model object and its output layers while every convolution computes
    in bfloat16.

    Returns:
        The policy's name, or None when no Keras layer holds the weights (a SavedModel, whose
        graph does not record the policy it was traced under).
    """
    counts = collections.Counter(
        layer.dtype_policy.name
        for layer in _leaf_layers(backbone)
        if layer.weights and layer.dtype_policy is not None
    )
    return counts.most_common(1)[0][0] if counts else None


def _weights_epoch(model: LoadedModel) -> int | None:
    """The epochs of training the model's weights hold, when it belongs to a run.

    A checkpoint `ckpt-NNNN.keras` holds NNNN epochs; the export is written after the run's
    last epoch, the last row of metrics.csv.
    """
    if model.run is None:
        return None
    for epochs, path in model.run.checkpoints():
        if path == model.weights:
            return epochs
    return max((int(row["epoch"]) for row in model.run.read_metrics()), default=None)


def _leaf_layers(model: keras.Model):
    """Every layer of `model` that is not itself a model, nested models included."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def _baseline_backbone(model: LoadedModel, seed: int, policy: str | None) -> keras.Model:
    """The random baseline, built under the dtype policy the model computes in.

    train.py builds its backbone under the run's resolved `--precision` (`auto` is
    `mixed_bfloat16` on a CPU with native bfloat16): the weights drawn are the same under any
    policy, but the features are computed in that precision, which moves the kNN figure by
    about a point. Built under the model's policy, the baseline is the run's untrained network
    and its kNN equals metrics.csv's epoch 0. The global policy is restored afterwards.
    """
    previous = keras.mixed_precision.dtype_policy()
    if policy:
        keras.mixed_precision.set_dtype_policy(policy)
    try:
        return random_backbone(model, seed)
    finally:
        keras.mixed_precision.set_dtype_policy(previous)


def _untrained_knn_note(
    model: LoadedModel, settings: ProtocolSettings, data_settings: dict, policy: str | None
) -> list[str]:
    """Why the baseline's kNN differs from the run's untrained figure, when it does.

    Returns:
        One note naming every difference from how train.py measured metrics.csv's epoch 0,
        or none when the baseline repeats that measurement (or there is no run to compare).
    """
    config = model.run_config
    if not config or not config.get("knn_every"):
        return []
    measured = {
        "seed": (settings.seed, config.get("seed")),
        "dataset": (data_settings["dataset"], config.get("dataset")),
        "test dataset": (data_settings["test_dataset"], config.get("dataset")),
        "split seed": (data_settings["split_seed"], config.get("split_seed")),
        "training split": (data_settings["train_split"], config.get("knn_train_split")),
        "test split": (data_settings["test_split"], config.get("knn_test_split")),
        "kNN k": (settings.knn_k, config.get("knn_k")),
        "kNN T": (settings.knn_temperature, config.get("knn_temperature")),
    }
    if data_settings["holdout"] is not None:  # None: TFDS splits, which ignore the holdout
        measured["holdout"] = (data_settings["holdout"], config.get("holdout"))
    reasons = [
        f"{name} {ours} (the run's: {theirs})"
        for name, (ours, theirs) in measured.items()
        if ours != theirs
    ]
    if policy is None:
        reasons.append(
            f"dtype policy {keras.mixed_precision.dtype_policy().name} (a SavedModel does not "
            "record the run's)"
        )
    if not reasons:
        return []
    return [
        "the baseline's kNN is not the run's untrained figure (metrics.csv epoch 0): "
        + ", ".join(reasons)
        + "."
    ]


def _image_size(model: LoadedModel) -> int | None:
    """The side images are resized to: the model's input size, when it has one."""
    height, width = model.image_size
    if height is None and width is None:
        return (model.run_config or {}).get("image_size")
    if height != width:
        raise UsageError(
            f"the model takes {height}x{width} images, but evaluation resizes images to squares "
            "only; export the model with a square input size"
        )
    return height


def _plots_dir(model: LoadedModel, enabled: bool | None, plots_dir: str | None) -> str | None:
    """Where the PNGs go, or None when plots are off."""
    enabled = enabled if enabled is not None else model.run is not None
    if not enabled:
        return None
    if plots_dir:
        return plots_dir
    if model.run is None:
        raise UsageError(
            "plots need a folder when the model is not part of a train.py run",
            "pass plots_dir",
            fields=("plots_dir",),
        )
    return os.path.join(model.run.path, "plots")


__all__ = ["EvaluationResult", "evaluate", "load_evaluation_data"]
