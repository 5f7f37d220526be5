"""Evaluate a CARL run: `python evaluate.py --model=runs/digits` (kNN, linear probe, clustering).

`--model` takes a train.py workdir, an exported backbone SavedModel (WORKDIR/export/backbone) or
a `.keras` file. A model that belongs to a run evaluates on the run's dataset, holdout and split
seed unless told otherwise, writes WORKDIR/evaluation.json and draws WORKDIR/plots/. Figures
follow CARL's Table 1: accuracies in percent, NMI and ARI as fractions.

    python evaluate.py --model=runs/cifar10 --baseline
    python evaluate.py --model=model.keras --dataset=cifar10 --protocol=knn,cluster --output=r.json
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import dataclasses  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

from carl_tf import data, plots, reporting  # noqa: E402
from carl_tf.cli import UsageError, exit_on_usage_error, parse_flags  # noqa: E402
from carl_tf.evaluation.linear_eval import DEFAULT_LEARNING_RATE  # noqa: E402
from carl_tf.evaluation.protocols import (  # noqa: E402
    LINEAR_MODES,
    PROTOCOLS,
    ProtocolSettings,
    run_protocols,
)
from carl_tf.model_loading import LoadedModel, load_model, random_backbone  # noqa: E402

_MODEL = flags.DEFINE_string(
    "model",
    None,
    "A train.py workdir (its export/carl.keras, else its newest checkpoint), an exported "
    "backbone SavedModel directory, or a .keras file.",
)
_DATASET = flags.DEFINE_string(
    "dataset",
    None,
    "Labelled images: a TFDS name (fit on its train split, scored on its test split), "
    "folder:PATH, npz:PATH or digits. Default: the run's dataset.",
)
_TEST_DATASET = flags.DEFINE_string(
    "test_dataset",
    None,
    "Score on this labelled source (all of it, or a TFDS dataset's test split) instead of "
    "held-out images of --dataset, which is then fitted on whole (TFDS: its train split).",
)
_HOLDOUT = flags.DEFINE_float(
    "holdout",
    None,
    "digits/folder/npz without --test_dataset: fraction held out for scoring, stratified. "
    "Default: the run's holdout on its own dataset, else 0.2.",
)
_SPLIT_SEED = flags.DEFINE_integer(
    "split_seed", None, "Seed of the holdout split. Default: the run's split_seed, else 0."
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory. Default: the run's.")
_DOWNLOAD = flags.DEFINE_bool("download", False, "Let TFDS download a missing dataset.")
_PROTOCOL = flags.DEFINE_list(
    "protocol", list(PROTOCOLS), f"Comma-separated protocols to run, from {', '.join(PROTOCOLS)}."
)
_KNN_K = flags.DEFINE_integer("knn_k", 200, "Neighbours of knn_top1 (knn20_top1 always uses 20).")
_KNN_TEMPERATURE = flags.DEFINE_float("knn_temperature", 0.1, "T of the kNN vote exp(sim / T).")
_LINEAR = flags.DEFINE_enum(
    "linear",
    "full",
    LINEAR_MODES,
    "full: MoCo's linear protocol (random crop and flip, the frozen backbone run every step); "
    "features: fast probe on features computed once, no augmentation.",
)
_LINEAR_EPOCHS = flags.DEFINE_integer(
    "linear_epochs", 100, "Linear probe epochs (rate x0.1 at 60% and 80%)."
)
_LINEAR_LR = flags.DEFINE_float(
    "linear_lr", DEFAULT_LEARNING_RATE, "Linear probe base learning rate (standardised features)."
)
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 256, "Images per forward pass and per probe step.")
_SEED = flags.DEFINE_integer(
    "seed",
    None,
    "Seed of the probe, k-means and the baseline's initialisation. Default: the run's seed "
    "(so the baseline starts where the run did), else 0.",
)
_BASELINE = flags.DEFINE_bool(
    "baseline",
    False,
    "Also evaluate a randomly initialised backbone of the same architecture, side by side.",
)
_OUTPUT = flags.DEFINE_string(
    "output",
    None,
    "JSON file for every figure and its settings, written atomically. Default: "
    "WORKDIR/evaluation.json for a model of a run, else none.",
)
_PLOTS = flags.DEFINE_bool(
    "plots",
    None,
    "Draw the training curves (from metrics.csv) and the prototype-vs-class heatmap as PNGs. "
    "Default: on for a model of a run.",
)
_PLOTS_DIR = flags.DEFINE_string("plots_dir", None, "Where the PNGs go. Default: WORKDIR/plots.")

_LOCAL_SOURCES = ("digits", "folder", "npz")
_BASELINE_NOTE = (
    "prototype figures of the random baseline are n/a: it has no trained assigner to cluster "
    "with; its k-means rows compare the two backbones."
)


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {' '.join(argv[1:])}; flags look like --name=value")
    if _MODEL.value is None:
        raise UsageError("pass --model=PATH: a train.py workdir, a SavedModel or a .keras file")
    started = time.time()
    settings = protocol_settings()  # checked before the slow part
    model = load_model(_MODEL.value)
    if _SEED.value is None and model.run_config:
        # With the run's seed the baseline draws the weights train.py started from (its kNN then
        # equals the run's epoch-0 row), as long as train.py seeds and builds the backbone first.
        settings = dataclasses.replace(settings, seed=model.run_config["seed"])
    plots_dir = _plots_dir(model)
    train, test, data_settings = load_evaluation_data(model)
    num_classes = data_settings["num_classes"]
    test_name = data_settings["test_dataset"]
    print(
        f"evaluating {model.weights} on {data_settings['dataset']}"
        + (f" (scored on {test_name})" if test_name != data_settings["dataset"] else "")
        + f": {len(train[1])} training / {len(test[1])} test images, {num_classes} classes, "
        f"{data_settings['image_size']} px"
    )
    columns, assignments, notes = evaluate(model, train, test, num_classes, settings)
    labels = reporting.figure_labels(settings, model.num_prototypes, num_classes)
    print(reporting.format_table(columns, labels))
    for note in notes:
        print(f"note: {note}")

    output = _OUTPUT.value or (model.run and os.path.join(model.run.path, "evaluation.json"))
    if output:
        settings_record = {
            "model": model.path,
            "model_kind": model.kind,
            "weights": model.weights,
            **data_settings,
            "num_prototypes": model.num_prototypes,
            **dataclasses.asdict(settings),
            "baseline": _BASELINE.value,
            "seconds": round(time.time() - started, 1),
        }
        record = {**columns["model"], "settings": settings_record, "notes": notes}
        if "random init" in columns:
            record["baseline"] = columns["random init"]
        reporting.write_json(output, record)
        print(f"figures and settings in {os.path.abspath(output)}")
    if plots_dir:
        draw_plots(model, assignments, test[1], data_settings, plots_dir)
    return 0


def evaluate(model: LoadedModel, train, test, num_classes: int, settings: ProtocolSettings):
    """Runs the protocols on the model and, with --baseline, on a random backbone like it.

    Returns:
        Column title -> figures (`model`, and `random init` with --baseline), the model's
        prototype of every test image (None without assigner or cluster protocol), and notes
        on the figures that are n/a.
    """
    evaluation = run_protocols(
        model.backbone, model.assigner, train, test, num_classes=num_classes, settings=settings
    )
    columns, notes = {"model": evaluation.figures}, []
    clustering = "cluster" in settings.protocols
    if clustering and model.assigner is None:
        notes.append(
            "prototype figures are n/a: the model has no assigner (a bare backbone, or a "
            "SavedModel without the 'assign' signature)."
        )
    if _BASELINE.value:
        logging.info("evaluating the randomly initialised baseline")
        backbone = random_backbone(model, settings.seed)
        baseline = run_protocols(
            backbone, None, train, test, num_classes=num_classes, settings=settings
        )
        columns["random init"] = baseline.figures
        if clustering:
            notes.append(_BASELINE_NOTE)
    return columns, evaluation.assignments, notes


def protocol_settings() -> ProtocolSettings:
    """The protocols and their settings from the flags, checked."""
    protocols = tuple(dict.fromkeys(p.strip() for p in _PROTOCOL.value if p.strip()))
    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown or not protocols:
        raise UsageError(
            f"unknown protocol {', '.join(map(repr, unknown)) or '(none given)'}; pass "
            f"--protocol as a comma-separated list from {', '.join(PROTOCOLS)}"
        )
    positive = {
        "knn_k": _KNN_K.value,
        "knn_temperature": _KNN_TEMPERATURE.value,
        "linear_epochs": _LINEAR_EPOCHS.value,
        "linear_lr": _LINEAR_LR.value,
        "batch_size": _BATCH_SIZE.value,
    }
    for name, value in positive.items():
        if value <= 0:
            raise UsageError(f"{name} must be positive, got {value}; fix --{name}")
    return ProtocolSettings(
        protocols=protocols,
        knn_k=_KNN_K.value,
        knn_temperature=_KNN_TEMPERATURE.value,
        linear=_LINEAR.value,
        linear_epochs=_LINEAR_EPOCHS.value,
        linear_learning_rate=_LINEAR_LR.value,
        batch_size=_BATCH_SIZE.value,
        seed=_SEED.value if _SEED.value is not None else 0,
    )


def load_evaluation_data(model: LoadedModel):
    """Labelled training and test arrays at the model's input size, and how they were chosen.

    Returns:
        `(images, labels)` to fit on, `(images, labels)` to score on, and the data settings
        for the JSON record.
    """
    config = model.run_config or {}
    dataset = _DATASET.value or config.get("dataset")
    if not dataset:
        raise UsageError(f"pass --dataset: {model.path} is not part of a train.py run")
    test_dataset = _TEST_DATASET.value
    local = _is_local(dataset)
    own_dataset = dataset == config.get("dataset")
    holdout = _HOLDOUT.value
    if holdout is None:
        holdout = config.get("holdout", 0.0) if own_dataset else 0.2
    split_seed = _SPLIT_SEED.value if _SPLIT_SEED.value is not None else config.get("split_seed", 0)
    if not local or test_dataset:
        holdout = 0.0
    elif holdout <= 0:
        raise UsageError(
            f"evaluating on {dataset} needs held-out images; pass --holdout (e.g. 0.2) or "
            "--test_dataset"
        )
    options = dict(
        data_dir=_DATA_DIR.value or config.get("data_dir") or None,
        image_size=_image_size(model),
        seed=split_seed,
        download=_DOWNLOAD.value,
    )
    # TFDS sources have train and test splits; the others are split by the holdout, or used
    # whole when --test_dataset provides the scored images.
    train_split = "all" if local and test_dataset else "train"
    train_source = data.load_source(dataset, split=train_split, holdout=holdout, **options)
    test_name = test_dataset or dataset
    test_split = "all" if test_dataset and _is_local(test_dataset) else "test"
    test_source = data.load_source(test_name, split=test_split, holdout=holdout, **options)
    names = (train_source.class_names, test_source.class_names)
    if None not in names and names[0] != names[1]:
        raise UsageError(
            f"the class folders of {dataset} and {test_name} differ, so their labels do not "
            "match; give both the same class sub-folders"
        )
    train, test = _labelled(train_source), _labelled(test_source)
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


def draw_plots(
    model: LoadedModel,
    assignments: np.ndarray | None,
    test_labels: np.ndarray,
    data_settings: dict,
    plots_dir: str,
) -> None:
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
    if assignments is not None:
        path = os.path.join(plots_dir, "prototypes_vs_classes.png")
        class_names = data_settings["class_names"]
        plots.plot_prototypes_vs_classes(
            assignments,
            test_labels,
            path,
            num_prototypes=model.num_prototypes,
            num_classes=data_settings["num_classes"],
            class_names=tuple(class_names) if class_names else None,
            title=f"{model.weights} on the {data_settings['test_dataset']} test images",
        )
        written.append(path)
    if written:
        print(f"plots: {', '.join(written)}")
    else:
        print("plots: none drawn (no metrics.csv, and no prototype assignments to draw)")


def _is_local(spec: str) -> bool:
    """Whether a source is digits, a folder or an npz file (split by holdout, not by TFDS)."""
    return spec.partition(":")[0] in _LOCAL_SOURCES


def _image_size(model: LoadedModel) -> int | None:
    """The side images are resized to: the model's input size, when it has one."""
    height, width = model.image_size
    if height is None and width is None:
        return (model.run_config or {}).get("image_size")
    if height != width:
        raise UsageError(
            f"the model takes {height}x{width} images, but evaluate.py resizes images to squares "
            "only; export the model with a square input size"
        )
    return height


def _labelled(source: data.ImageSource) -> tuple[np.ndarray, np.ndarray]:
    """The source's labelled images and labels; unlabelled (-1) images are dropped."""
    if source.num_classes is None:
        raise UsageError(
            f"{source.description} has no labels, which evaluation needs; use a folder with one "
            "sub-folder per class, an npz with labels y, or a labelled TFDS dataset"
        )
    images, labels = data.source_arrays(source)
    labelled = labels >= 0
    return images[labelled], labels[labelled]


def _plots_dir(model: LoadedModel) -> str | None:
    """Where the PNGs go, or None when plots are off."""
    enabled = _PLOTS.value if _PLOTS.value is not None else model.run is not None
    if not enabled:
        return None
    if _PLOTS_DIR.value:
        return _PLOTS_DIR.value
    if model.run is None:
        raise UsageError("--plots needs --plots_dir when --model is not part of a train.py run")
    return os.path.join(model.run.path, "plots")


if __name__ == "__main__":
    app.run(exit_on_usage_error(main), flags_parser=parse_flags)
