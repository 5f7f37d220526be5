"""`carl-evaluate` / `python evaluate.py --model=runs/digits`: kNN, linear probe and clustering.

`--model` takes a train.py workdir, an exported backbone SavedModel (WORKDIR/export/backbone) or
a `.keras` file. A model that belongs to a run evaluates on the run's dataset, holdout and split
seed unless told otherwise, writes WORKDIR/evaluation.json and draws WORKDIR/plots/. Figures
follow CARL's Table 1: accuracies in percent, NMI and ARI as fractions. The work is
`carl_tf.evaluate`; this module maps flags to it.

    carl-evaluate --model=runs/cifar10 --baseline
    carl-evaluate --model=model.keras --dataset=cifar10 --protocol=knn,cluster --output=r.json
"""

from absl import app, flags

from carl_tf import _entry_point
from carl_tf.cli.common import load_keras, parse_flags, run_main
from carl_tf.errors import UsageError
from carl_tf.evaluation.model_path import model_kind
from carl_tf.evaluation.settings import (
    DEFAULT_LEARNING_RATE,
    KNN_K,
    KNN_TEMPERATURE,
    LINEAR_MODES,
    PROTOCOLS,
    ProtocolSettings,
)

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
    "Without --test_dataset: fraction held out for scoring, stratified, of digits/folder/npz "
    "or of a TFDS dataset's train split. Default: the run's holdout on its own dataset, else "
    "0.2 for digits/folder/npz and the test split for TFDS.",
)
_SPLIT_SEED = flags.DEFINE_integer(
    "split_seed", None, "Seed of the holdout split. Default: the run's split_seed, else 0."
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory. Default: the run's.")
_DOWNLOAD = flags.DEFINE_bool("download", False, "Let TFDS download a missing dataset.")
_PROTOCOL = flags.DEFINE_list(
    "protocol", list(PROTOCOLS), f"Comma-separated protocols to run, from {', '.join(PROTOCOLS)}."
)
_KNN_K = flags.DEFINE_integer("knn_k", KNN_K, "Neighbours of knn_top1 (knn20_top1 always uses 20).")
_KNN_TEMPERATURE = flags.DEFINE_float(
    "knn_temperature", KNN_TEMPERATURE, "T of the kNN vote exp(sim / T)."
)
_LINEAR = flags.DEFINE_enum(
    "linear",
    "features",
    LINEAR_MODES,
    "features (default): the probe trains on features computed once, no augmentation; "
    "seconds to minutes. full: MoCo's linear protocol of the paper's Table 1 (random crop and "
    "flip through the frozen backbone every step), 10-30x slower; on CIFAR-10 the two agreed "
    "within 0.4 points. full flips the images, which suits natural photos, not digits or text; "
    "images upscaled from under 16 px a side (the 8x8 digits) are probed without crop and flip.",
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
    "Also evaluate a randomly initialised backbone of the same architecture, side by side, in "
    "the model's dtype policy: with the run's seed it is the run's untrained network.",
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

# The flags of the arguments of `carl_tf.evaluate` (and `ProtocolSettings`) named otherwise;
# every other argument is set by the flag of its name.
_FLAGS = {"protocols": "--protocol", "draw_plots": "--plots"}


def protocol_settings(run_seed: int | None) -> ProtocolSettings:
    """The protocols and their settings from the flags, checked."""
    protocols = tuple(dict.fromkeys(p.strip() for p in _PROTOCOL.value if p.strip()))
    seed = _SEED.value if _SEED.value is not None else (run_seed or 0)
    settings = ProtocolSettings(
        protocols=protocols,
        knn_k=_KNN_K.value,
        knn_temperature=_KNN_TEMPERATURE.value,
        linear=_LINEAR.value,
        linear_epochs=_LINEAR_EPOCHS.value,
        linear_learning_rate=_LINEAR_LR.value,
        batch_size=_BATCH_SIZE.value,
        seed=seed,
    )
    settings.check()
    return settings


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {' '.join(argv[1:])}; flags look like --name=value")
    if _MODEL.value is None:
        raise UsageError("pass --model=PATH: a train.py workdir, a SavedModel or a .keras file")
    # Checked before TensorFlow loads: a mistake is reported at once.
    protocol_settings(None)
    require_tensorflow_backend()
    model_kind(_MODEL.value)
    load_keras()
    from carl_tf.evaluation.evaluate import evaluate
    from carl_tf.evaluation.loading import load_model

    model = load_model(_MODEL.value)
    result = evaluate(
        model,
        dataset=_DATASET.value,
        test_dataset=_TEST_DATASET.value,
        holdout=_HOLDOUT.value,
        split_seed=_SPLIT_SEED.value,
        data_dir=_DATA_DIR.value,
        download=_DOWNLOAD.value,
        # With the run's seed the baseline draws the weights train.py started from.
        settings=protocol_settings((model.run_config or {}).get("seed")),
        baseline=_BASELINE.value,
        output=_OUTPUT.value,
        plots_dir=_PLOTS_DIR.value,
        draw_plots=_PLOTS.value,
    )
    s = result.settings
    scored = f" (scored on {s['test_dataset']})" if s["test_dataset"] != s["dataset"] else ""
    held = [f"epoch {s['weights_epoch']}"] if s["weights_epoch"] is not None else []
    held += [s["dtype_policy"]] if s["dtype_policy"] else []
    held = f" ({', '.join(held)})" if held else ""
    print(
        f"evaluated {s['weights']}{held} on {s['dataset']}{scored}: {s['num_train']} training / "
        f"{s['num_test']} test images, {s['num_classes']} classes, {s['image_size']} px"
    )
    print(result.table())
    for note in result.notes:
        print(f"note: {note}")
    if result.output:
        print(f"figures and settings in {result.output}")
    if _PLOTS.value is not False and (result.plots or model.run):
        drawn = ", ".join(result.plots) or "none drawn (no metrics.csv, no prototype assignments)"
        print(f"plots: {drawn}")
    return 0


def require_tensorflow_backend() -> None:
    """Raises UsageError under another Keras backend: the probes and the loaders of exported
    models are TensorFlow's, and a `.keras` file of a JAX run loads there too."""
    backend = _entry_point.keras_backend()  # as Keras will find it, without importing Keras
    if backend != "tensorflow":
        raise UsageError(
            f"evaluate.py runs under Keras's TensorFlow backend, not {backend!r}; "
            "rerun with KERAS_BACKEND=tensorflow (a JAX run's export/carl.keras loads there)"
        )


def run() -> None:
    """The console script's entry point."""
    app.run(
        run_main(main, lambda field: _FLAGS.get(field, f"--{field}")),
        flags_parser=lambda argv: parse_flags(argv, help_module=__name__),
    )
