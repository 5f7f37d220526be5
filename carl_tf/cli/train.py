"""`carl-train` / `python train.py`: pretrain CARL (or SimCLR, `--method=simclr`) from a preset,
the offline digits by default.

A preset gives every setting: `--dataset=NAME` alone picks the preset NAME when carl_tf ships
one (cifar10, cifar100, stl10, imagenet2012, digits, cifar10_cpu), else the paper's recipe on
that source; `--config=NAME[:ARG]` or `--config=PATH.py[:ARG]` picks one explicitly, and `--config.FIELD=VALUE`
overrides any field of it. Running the same command again resumes from the last finished epoch.
"""

import importlib.util
import json
import logging
import os
import re
import sys

from absl import app, flags
from ml_collections import config_flags

from carl_tf.cli.common import load_keras, parse_flags, run_main
from carl_tf.errors import UsageError
from carl_tf.run.choices import BACKBONES, EXTEND_MODES, METHODS, PRECISIONS, STRATEGIES
from carl_tf.run.config import unknown_field_error, validate_config

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Preset name (cifar10, cifar10_cpu, ...) or config file (my_config.py), optionally with "
    "':ARG' (e.g. digits:smoke); override its fields with --config.FIELD=VALUE (see "
    "carl_tf/configs/common.py for every field). Default: the preset of --dataset.",
)
_DATASET = flags.DEFINE_string(
    "dataset",
    None,
    "Data source: a TFDS name (cifar10, cifar100, stl10, ...), folder:PATH, "
    "npz:PATH or digits (the offline default). Alone, it picks the preset of that name.",
)
_WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "Run directory (config, metrics.csv, checkpoints, TensorBoard, export); "
    "default runs/<preset>. Rerunning on it resumes.",
)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Delete the workdir's run and start afresh.")
_EXTEND = flags.DEFINE_enum(
    "extend",
    None,
    list(EXTEND_MODES),
    "Train a run longer than it was started for (--epochs above its own): "
    + "; ".join(f"{mode}: {what}" for mode, what in EXTEND_MODES.items())
    + ".",
)
_PRINT_CONFIG = flags.DEFINE_bool(
    "print_config", False, "Print the resolved, checked config and the workdir, then exit."
)

# Shortcuts for the fields users reach for first; each overrides the preset's value when given.
OVERRIDES = {
    "data_dir": flags.DEFINE_string("data_dir", None, "TFDS data directory."),
    "download": flags.DEFINE_bool("download", None, "Let TFDS download a missing dataset."),
    "holdout": flags.DEFINE_float(
        "holdout",
        None,
        "Fraction held out (seeded by split_seed, per class) for the kNN monitor and "
        "evaluate.py: of digits/folder/npz sources, or of a TFDS dataset's train split.",
    ),
    "epochs": flags.DEFINE_integer("epochs", None, "Pretraining epochs."),
    "batch_size": flags.DEFINE_integer("batch_size", None, "Global batch size (pairs per step)."),
    "learning_rate": flags.DEFINE_float(
        "learning_rate", None, "SGD learning rate at batch 256; scaled by batch_size/256."
    ),
    "backbone": flags.DEFINE_string(
        "backbone",
        None,
        f"Backbone: {', '.join(BACKBONES)}, or keras:NAME for any keras.applications "
        "constructor with fresh weights behind its own preprocessing (keras:MobileNetV3Small; "
        "most need --image_size of 32 or more, and --backbone_width does not apply).",
    ),
    "backbone_width": flags.DEFINE_integer(
        "backbone_width", None, "Base channels of the ResNet (64 standard; 16 for CPU runs)."
    ),
    "image_size": flags.DEFINE_integer("image_size", None, "Side of the square input images."),
    "method": flags.DEFINE_enum(
        "method",
        None,
        list(METHODS),
        "Objective: carl (the paper's, the default) or simclr (NT-Xent, the baseline with "
        "negatives of CARL's Table 1, on the same encoder, views, optimizer and run directory).",
    ),
    "simclr_temperature": flags.DEFINE_float(
        "simclr_temperature", None, "Temperature of SimCLR's NT-Xent (--method=simclr)."
    ),
    "num_prototypes": flags.DEFINE_integer("num_prototypes", None, "K, learnable prototypes."),
    "kl_start": flags.DEFINE_float("kl_start", None, "lambda at epoch 0 (b in eq. 8)."),
    "kl_end": flags.DEFINE_float("kl_end", None, "lambda after the decay (a in eq. 8)."),
    "kl_decay_epochs": flags.DEFINE_integer("kl_decay_epochs", None, "Epochs of decay (E)."),
    "knn_every": flags.DEFINE_integer("knn_every", None, "Epochs between kNN checks; 0: off."),
    "seed": flags.DEFINE_integer(
        "seed",
        None,
        "Random seed of initialisation, views and data order (split_seed fixes the holdout).",
    ),
    "strategy": flags.DEFINE_enum(
        "strategy",
        None,
        list(STRATEGIES),
        "Where the step runs. TensorFlow backend: a tf.distribute strategy, auto = mirrored "
        "when several GPUs are visible. JAX backend: auto = mirrored when JAX sees several "
        "devices, default = one device, mirrored = keras.distribution.DataParallel over all "
        "local devices; multi_worker and tpu need the TensorFlow backend.",
    ),
    "precision": flags.DEFINE_enum(
        "precision",
        None,
        list(PRECISIONS),
        "Keras dtype policy. auto: mixed_bfloat16 on TPUs, on NVIDIA GPUs of compute "
        "capability 8.0 and up (the lowest of the visible GPUs counts) and on CPU-only machines "
        "whose CPU computes bfloat16 natively (AVX512_BF16 or AMX); mixed_float16 on GPUs of "
        "compute capability 7.x; float32 on older GPUs and other CPUs. The loss and the "
        "softmax stay float32.",
    ),
    "jit_compile": flags.DEFINE_bool("jit_compile", None, "Compile the train step with XLA."),
}


def preset_path(name: str) -> str | None:
    """The file of the preset carl_tf ships under `name`, or None."""
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        return None
    try:
        spec = importlib.util.find_spec(f"carl_tf.configs.{name}")
    except ModuleNotFoundError:
        return None
    return spec.origin if spec and spec.origin else None


def resolve_config_argument(argv: list[str]) -> tuple[list[str], str, str | None]:
    """Rewrites `--config` to a config file path that ml_collections can load.

    A preset name becomes its shipped file; without `--config` the preset of `--dataset` (or
    the paper's recipe, for a source without a preset) is added, so `--config.FIELD=VALUE`
    works with `--dataset` alone.

    Returns:
        The new argv, the preset's name (the default workdir's), and the dataset the command
        line sets on top of the preset (None: the preset's own).

    Raises:
        UsageError: For a preset name or config file that does not exist.
    """
    config_value, dataset = None, None
    for arg in argv[1:]:
        if arg.startswith("--config="):
            config_value = arg.split("=", 1)[1]
        elif arg.startswith("--dataset="):
            dataset = arg.split("=", 1)[1]
    if config_value is None:
        name = dataset or "digits"
        path = preset_path(name)
        if path is not None:
            return [argv[0], f"--config={path}", *argv[1:]], name, None
        path = preset_path("common")
        return [argv[0], f"--config={path}", *argv[1:]], name, dataset
    target, _, arg = config_value.partition(":")
    path = preset_path(target) if not target.endswith(".py") else None
    if path is None:
        path = os.path.abspath(os.path.expanduser(target))
        if not os.path.isfile(path):
            raise UsageError(
                f"no preset or config file {target!r}; pass a preset name "
                f"({', '.join(shipped_presets())}) or the path of a .py config file"
            )
    stem = os.path.splitext(os.path.basename(path))[0]
    name = f"{stem}-{arg}" if arg else stem
    rewritten = f"--config={path}" + (f":{arg}" if arg else "")
    return [rewritten if a.startswith("--config=") else a for a in argv], name, dataset


def shipped_presets() -> list[str]:
    """Names of the presets in carl_tf.configs."""
    directory = os.path.dirname(preset_path("common"))
    return sorted(
        n[:-3]
        for n in os.listdir(directory)
        if n.endswith(".py") and n[0] != "_" and n != "common.py"
    )


_RESOLVED = {}


def _parse(argv: list[str]) -> list[str]:
    try:
        argv, name, dataset = resolve_config_argument(argv)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    # --config.FIELD on the command line: fields the user set, which sizing leaves alone.
    fields = {a[len("--config.") :].split("=", 1)[0] for a in argv if a.startswith("--config.")}
    _RESOLVED.update(name=name, dataset=dataset, config_fields=fields)
    try:
        return parse_flags(argv, help_module=__name__)
    except AttributeError as error:  # --config.FIELD for a field the config lacks
        # ml_collections words it as "'FIELD'\nDid you mean ..."; the first name is the field.
        field = re.search(r"[A-Za-z_]\w*", str(error.args[0] if error.args else error)).group(0)
        print(f"error: {unknown_field_error(field)}", file=sys.stderr)
        sys.exit(2)


def resolve_config():
    """The chosen preset with the command line's overrides applied, and the workdir."""
    config = _CONFIG.value
    if _RESOLVED["dataset"] is not None:
        config.dataset = _RESOLVED["dataset"]
    for field, flag in OVERRIDES.items():
        if flag.value is not None:
            config[field] = flag.value
    return config, _WORKDIR.value or os.path.join("runs", _sanitize(_RESOLVED["name"]))


# The arguments of `carl_tf.pretrain` beside the config, each set by the flag of its name.
_PRETRAIN_ARGUMENTS = ("workdir", "overwrite", "extend")


def flag_name(field: str) -> str:
    """The flag that sets a config field or an argument of `carl_tf.pretrain`."""
    shortcut = field in OVERRIDES or field in _PRETRAIN_ARGUMENTS
    return f"--{field}" if shortcut else f"--config.{field}"


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {' '.join(argv[1:])}; flags look like --name=value")
    config, workdir = resolve_config()
    validate_config(config)  # before TensorFlow loads: a mistake is reported in a second
    # Sized before --print_config, which shows what the run would train with. carl_tf.data
    # imports Keras (its array batches), so TensorFlow loads first, quietly.
    if _RESOLVED["dataset"] and _RESOLVED["dataset"].partition(":")[0] in ("folder", "npz"):
        load_keras()
        from carl_tf.training.sizing import size_to_source

        fixed = _RESOLVED["config_fields"] | {f for f, flag in OVERRIDES.items() if flag.present}
        line = size_to_source(config, fixed)
        if line:
            logging.getLogger("carl_tf").info(line)
            validate_config(config)
    if _PRINT_CONFIG.value:
        print(json.dumps({**config.to_dict(), "workdir": workdir}, indent=2, sort_keys=True))
        return 0
    load_keras()
    from carl_tf.training.pretrain import pretrain  # the heavy part, after the flags are checked

    result = pretrain(config, workdir, overwrite=_OVERWRITE.value, extend=_EXTEND.value)
    if not result.trained:
        print(f"{result.workdir} holds a finished run; nothing to do (--overwrite trains afresh)")
        return 0
    if result.knn_untrained is not None and result.knn_final is not None:
        print(
            f"kNN top-1: untrained {result.knn_untrained:.2f}% -> trained {result.knn_final:.2f}%"
        )
    if result.backbone_export:
        print(
            f"exported backbone to {result.backbone_export} and the model to {result.model_export}"
        )
        print(f"metrics in {result.metrics}; TensorBoard: tensorboard --logdir {result.workdir}")
    else:  # no TensorFlow: neither a SavedModel nor TensorBoard logs
        print(f"exported the model to {result.model_export}; metrics in {result.metrics}")
    return 0


def _sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"


def run() -> None:
    """The console script's entry point."""
    app.run(run_main(main, flag_name), flags_parser=_parse)
