"""Pretrain CARL: `python train.py --dataset=cifar10`, or just `python train.py` (offline digits).

A preset from configs/ gives every setting; `--config=configs/NAME.py[:ARG]` picks one explicitly
and `--config.FIELD=VALUE` overrides any of its fields. `--dataset=NAME` alone picks
configs/NAME.py when it exists, else the paper's recipe (configs/common.py) on that source.
Running the same command again resumes from the last finished epoch.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import importlib  # noqa: E402
import re  # noqa: E402

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from carl_tf.cli import UsageError, exit_on_usage_error, parse_flags  # noqa: E402
from carl_tf.precision import PRECISIONS  # noqa: E402
from carl_tf.training import pretrain  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    "config",
    None,
    "Preset file, e.g. configs/cifar10.py or configs/cifar10.py:smoke; override its fields with "
    "--config.FIELD=VALUE (see configs/common.py for every field).",
)
_DATASET = flags.DEFINE_string(
    "dataset",
    None,
    "Data source: a TFDS name (cifar10, cifar100, stl10, ...), folder:PATH, "
    "npz:PATH or digits (the offline default). Alone, it picks configs/NAME.py when present.",
)
_WORKDIR = flags.DEFINE_string(
    "workdir",
    None,
    "Run directory (config, metrics.csv, checkpoints, TensorBoard, export); "
    "default runs/<preset>. Rerunning on it resumes.",
)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Delete the workdir's run and start afresh.")

# Shortcuts for the fields users reach for first; each overrides the preset's value when given.
_OVERRIDES = {
    "data_dir": flags.DEFINE_string("data_dir", None, "TFDS data directory."),
    "download": flags.DEFINE_bool("download", None, "Let TFDS download a missing dataset."),
    "holdout": flags.DEFINE_float(
        "holdout", None, "digits/folder/npz: fraction held out (seeded) for the kNN monitor."
    ),
    "epochs": flags.DEFINE_integer("epochs", None, "Pretraining epochs."),
    "batch_size": flags.DEFINE_integer("batch_size", None, "Global batch size (pairs per step)."),
    "learning_rate": flags.DEFINE_float(
        "learning_rate", None, "SGD learning rate at batch 256; scaled by batch_size/256."
    ),
    "backbone": flags.DEFINE_enum(
        "backbone", None, ["resnet18", "resnet34", "resnet50"], "Backbone architecture."
    ),
    "backbone_width": flags.DEFINE_integer(
        "backbone_width", None, "Base channels of the ResNet (64 standard; 16 for CPU runs)."
    ),
    "image_size": flags.DEFINE_integer("image_size", None, "Side of the square input images."),
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
        ["auto", "default", "mirrored", "multi_worker", "tpu"],
        "tf.distribute strategy; auto = mirrored when several GPUs are visible.",
    ),
    "precision": flags.DEFINE_enum(
        "precision",
        None,
        list(PRECISIONS),
        "Keras dtype policy; auto = mixed_bfloat16 on TPUs and on CPUs with native bfloat16, "
        "else float32. The loss and the softmax stay float32.",
    ),
    "jit_compile": flags.DEFINE_bool("jit_compile", None, "Compile the train step with XLA."),
}


def resolve_config():
    """The preset chosen by --config or --dataset, with the command line's overrides applied."""
    dataset = _DATASET.value
    if _CONFIG.value is not None:
        config = _CONFIG.value
        name = _preset_name(config_flags.get_config_filename(flags.FLAGS["config"]))
    elif os.path.exists(_configs_path(f"{dataset or 'digits'}.py")):
        name = dataset or "digits"
        config = importlib.import_module(f"configs.{name}").get_config()
        dataset = None  # the preset names its own data (cifar10_cpu: an image folder)
    else:
        name = dataset
        config = importlib.import_module("configs.common").paper_recipe()
    if dataset is not None:
        config.dataset = dataset
    for field, flag in _OVERRIDES.items():
        if flag.value is not None:
            config[field] = flag.value
    return config, _WORKDIR.value or os.path.join("runs", _sanitize(name))


def main(argv):
    if len(argv) > 1:
        raise UsageError(f"unexpected arguments {' '.join(argv[1:])}; flags look like --name=value")
    config, workdir = resolve_config()
    return pretrain(config, workdir, overwrite=_OVERWRITE.value)


def _configs_path(name: str) -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", name)


def _preset_name(path_and_arg: str) -> str:
    path, _, arg = path_and_arg.partition(":")
    stem = os.path.splitext(os.path.basename(path))[0]
    return f"{stem}-{arg}" if arg else stem


def _sanitize(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "run"


if __name__ == "__main__":
    app.run(exit_on_usage_error(main), flags_parser=parse_flags)
