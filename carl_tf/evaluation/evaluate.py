"""`carl_tf.evaluate`: kNN, linear probe and clustering of a model or run, as one Python call.

evaluate.py (and `carl-evaluate`) map their flags to this function; a notebook calls it directly.
Figures follow CARL's Table 1: accuracies in percent, NMI and ARI as fractions.
"""

import dataclasses
import logging
import os
import time

import numpy as np

from carl_tf import data
from carl_tf.errors import UsageError
from carl_tf.evaluation import plots
from carl_tf.evaluation.loading import LoadedModel, load_model, random_backbone
from carl_tf.evaluation.protocols import PROTOCOLS, ProtocolSettings, run_protocols
from carl_tf.evaluation.report import figure_labels, format_table, write_json

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
        settings: The model, data and protocol settings the figures were measured with.
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
        baseline: Also evaluate a randomly initialised backbone of the same architecture.
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
    loaded = model if isinstance(model, LoadedModel) else load_model(model)
    if settings is None:
        seed = (loaded.run_config or {}).get("seed", 0)
        # With the run's seed the baseline draws the weights train.py started from (its kNN then
        # equals the run's epoch-0 row), as train.py seeds and builds the backbone first.
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
    logger.info(
        "evaluating %s on %s: %d training / %d test images, %d classes",
        loaded.weights,
        data_settings["test_dataset"],
        len(train[1]),
        len(test[1]),
        num_classes,
    )
    evaluation = run_protocols(
        loaded.backbone, loaded.assigner, train, test, num_classes=num_classes, settings=settings
    )
    notes, baseline_figures = [], None
    clustering = "cluster" in settings.protocols
    if clustering and loaded.assigner is None:
        notes.append(
            "prototype figures are n/a: the model has no assigner (a bare backbone, or a "
            "SavedModel without the 'assign' signature)."
        )
    if baseline:
        logger.info("evaluating the randomly initialised baseline")
        backbone = random_backbone(loaded, settings.seed)
        baseline_figures = run_protocols(
            backbone, None, train, test, num_classes=num_classes, settings=settings
        ).figures
        if clustering:
            notes.append(_BASELINE_NOTE)
    record_settings = {
        "model": loaded.path,
        "model_kind": loaded.kind,
        "weights": loaded.weights,
        **data_settings,
        "num_prototypes": loaded.num_prototypes,
        **dataclasses.asdict(settings),
        "baseline": baseline,
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
    if output:
        write_json(output, result.record())
        result = dataclasses.replace(result, output=os.path.abspath(output))
    if plots_dir:
        drawn = _draw_plots(loaded, result, data_settings, plots_dir)
        result = dataclasses.replace(result, plots=tuple(drawn))
    return result


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
        raise UsageError(f"pass --dataset: {model.path} is not part of a train.py run")
    local = data.splits_by_holdout(dataset)
    own_dataset = dataset == config.get("dataset")
    if holdout is None:
        holdout = config.get("holdout", 0.0) if own_dataset else 0.2
    split_seed = split_seed if split_seed is not None else config.get("split_seed", 0)
    if not local or test_dataset:
        holdout = 0.0
    elif holdout <= 0:
        raise UsageError(
            f"evaluating on {dataset} needs held-out images; pass --holdout (e.g. 0.2) or "
            "--test_dataset"
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
        "holdout": holdout if local and not test_dataset else None,
        "split_seed": split_seed,
        "image_size": "x".join(map(str, train_source.image_shape[:2])),
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
        raise UsageError("plots need --plots_dir when --model is not part of a train.py run")
    return os.path.join(model.run.path, "plots")


__all__ = ["EvaluationResult", "evaluate", "load_evaluation_data"]
