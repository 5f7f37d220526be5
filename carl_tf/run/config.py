"""A run's config: every field checked before anything is touched, and config.json read back.

`configs/common.py` (`carl_tf.configs.common.paper_recipe`) defines the fields; `FIELDS` here
says what each may hold. `validate_config` checks every field, NaN and infinity included, so a
setting that cannot train is refused before a run directory is created, changed or deleted.
"""

import difflib
import json
import math
import re
from collections.abc import Callable

import ml_collections

from carl_tf.errors import RunDirectoryError, UsageError
from carl_tf.run.choices import (
    BACKBONES,
    KERAS_BACKBONE_PATTERN,
    METHODS,
    PRECISIONS,
    STRATEGIES,
    WEIGHT_DECAY_MODES,
    WEIGHT_DECAY_ON,
)


class ConfigFieldError(UsageError):
    """A config field whose value cannot work: `{problem}; fix the config field 'FIELD'`.

    Attributes:
        field: The field's name; the command line names its flag from it (`with_flags`).
        problem: What is wrong, without the fix (`momentum must be in [0, 1], got -1.0`).
    """

    def __init__(self, field: str, problem: str, flag: str | None = None):
        name = flag or f"the config field {field!r}"
        super().__init__(problem, fields=(field,), names={field: name})

    def with_flag(self, flag: str) -> "ConfigFieldError":
        """The same error, naming `flag` as the way to fix it."""
        return self.with_flags(lambda field: flag)


def _integer(low: int, high: float = math.inf) -> Callable[[object], str | None]:
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {value!r}"
        if not low <= value <= high:
            bound = f"at least {low}" if high == math.inf else f"in [{low}, {high}]"
            return f"must be {bound}, got {value}"
        return None

    return check


def _real(low: float, high: float = math.inf, *, open_low=False, open_high=False):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"must be a number, got {value!r}"
        if not math.isfinite(value):
            return f"must be finite, got {value}"
        too_low = value <= low if open_low else value < low
        too_high = value >= high if open_high else value > high
        if too_low or too_high:
            left, right = "(" if open_low else "[", ")" if open_high else "]"
            bound = (
                f"{'greater than' if open_low else 'at least'} {low:g}"
                if high == math.inf
                else f"in {left}{low:g}, {high:g}{right}"
            )
            return f"must be {bound}, got {value}"
        return None

    return check


def _boolean(value):
    return None if isinstance(value, bool) else f"must be true or false, got {value!r}"


def _text(allow_empty: bool = False):
    def check(value):
        if not isinstance(value, str):
            return f"must be a string, got {value!r}"
        return None if value or allow_empty else "must not be empty"

    return check


def _backbone(value):
    """A built-in ResNet, or `keras:NAME` for the `keras.applications` constructor NAME (whether
    Keras has NAME is checked when the backbone is built, once Keras has loaded)."""
    if value in BACKBONES or (
        isinstance(value, str) and re.fullmatch(KERAS_BACKBONE_PATTERN, value) is not None
    ):
        return None
    return (
        f"must be one of {', '.join(BACKBONES)}, or keras:NAME for a keras.applications "
        f"constructor (e.g. keras:MobileNetV3Small), got {value!r}"
    )


def _one_of(choices):
    def check(value):
        return None if value in choices else f"must be one of {', '.join(choices)}, got {value!r}"

    return check


# What every field may hold.
FIELDS: dict[str, Callable[[object], str | None]] = {
    "dataset": _text(),
    "data_dir": _text(allow_empty=True),
    "download": _boolean,
    "train_split": _text(),
    "knn_train_split": _text(),
    "knn_test_split": _text(),
    "holdout": _real(0.0, 1.0, open_high=True),
    "train_subset": _integer(0),
    "memory_budget_mb": _real(0.0, open_low=True),
    "split_seed": _integer(0),
    "image_size": _integer(1),
    "method": _one_of(METHODS),
    "simclr_temperature": _real(0.0, open_low=True),
    "backbone": _backbone,
    "backbone_width": _integer(1),
    "projection_hidden_dim": _integer(1),
    "projection_hidden_layers": _integer(0),
    "projection_dim": _integer(1),
    "num_prototypes": _integer(2),
    "symmetric": _boolean,
    "target_temperature": _real(0.0, open_low=True),
    "unit_prototypes": _boolean,
    "cosine_temperature": _real(0.0),
    "target_momentum": _real(0.0, 1.0, open_high=True),
    "prototype_block_size": _integer(0),
    "prototype_init_scale": _real(0.0, open_low=True),
    "kl_start": _real(0.0),
    "kl_end": _real(0.0),
    "kl_decay_epochs": _integer(0),
    "epochs": _integer(1),
    "batch_size": _integer(1),
    "learning_rate": _real(0.0, open_low=True),
    "warmup_epochs": _integer(0),
    "momentum": _real(0.0, 1.0),
    "weight_decay": _real(0.0),
    "weight_decay_mode": _one_of(WEIGHT_DECAY_MODES),
    "weight_decay_on": _one_of(WEIGHT_DECAY_ON),
    "crop_min_scale": _real(0.0, 1.0, open_low=True),
    "blur_probability": _real(0.0, 1.0),
    "small_crops": _integer(0),
    "small_crop_size": _integer(1),
    "small_crop_min_scale": _real(0.0, 1.0, open_low=True),
    "small_crop_max_scale": _real(0.0, 1.0, open_low=True),
    "knn_every": _integer(0),
    "knn_bank_size": _integer(0),
    "knn_k": _integer(1),
    "knn_temperature": _real(0.0, open_low=True),
    "collapse_fraction": _real(0.0, 1.0),
    "collapse_patience": _integer(0),
    "seed": _integer(0),
    "strategy": _one_of(STRATEGIES),
    "precision": _one_of(PRECISIONS),
    "jit_compile": _boolean,
}


# Fields that do nothing while another is off (0 or false): a run recorded before they existed
# resumes while that one stays off, whatever values they hold (carl_tf.run.rundir).
SWITCHED_BY = {
    "small_crop_size": "small_crops",
    "small_crop_min_scale": "small_crops",
    "small_crop_max_scale": "small_crops",
}

# The value a field had before it existed, where that is not "off" (0, false or empty; an off
# field a record lacks counts as unchanged, carl_tf.run.rundir): a run recorded without it
# trained with this one.
DEFAULTS_BEFORE_RECORDED = {
    "method": "carl",
    "simclr_temperature": 0.2,
    "target_temperature": 1.0,
    "prototype_init_scale": 1.0,
    "weight_decay_mode": "decoupled",
    "weight_decay_on": "all",
}

# CARL's options that change the views or the objective, with the value that turns each off: a
# run of another method refuses them rather than ignoring them. (Lambda, K and the collapse
# guard's fields, set by every preset, are simply unused there.)
_CARL_OPTIONS_OFF = {
    "symmetric": False,
    "small_crops": 0,
    "target_temperature": 1.0,
    "unit_prototypes": False,
    "cosine_temperature": 0.0,
    "target_momentum": 0.0,
    "prototype_block_size": 0,
    "prototype_init_scale": 1.0,
}

# What a run directory records beside the fields in config.json (carl_tf.run.rundir): not
# settings, so they are neither checked nor compared.
RECORD_KEYS = ("extensions", "resolved_precision")


def unknown_field_error(name: str) -> UsageError:
    """The error for a field no config has, naming the nearest real ones."""
    nearest = difflib.get_close_matches(name, FIELDS, n=3, cutoff=0.5)
    hint = (
        f"did you mean {' or '.join(nearest)}?"
        if nearest
        else "configs/common.py lists every field"
    )
    return UsageError(f"the config has no field {name!r}; {hint}")


def validate_config(config) -> None:
    """Checks that every field is present and holds a value that can train.

    Args:
        config: A ConfigDict (or mapping) with the fields of `paper_recipe()`.

    Raises:
        ConfigFieldError: For the first field whose value cannot work.
        UsageError: For a field the config lacks or one no config has.
    """
    values = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    values = {k: v for k, v in values.items() if k not in RECORD_KEYS}
    for name in values:
        if name not in FIELDS:
            raise unknown_field_error(name)
    for name, check in FIELDS.items():
        if name not in values:
            raise UsageError(f"the config lacks the field {name!r}; start it from paper_recipe()")
        problem = check(values[name])
        if problem:
            raise ConfigFieldError(name, f"{name} {problem}")
    if values["warmup_epochs"] >= values["epochs"]:
        raise ConfigFieldError(
            "warmup_epochs",
            f"warmup_epochs ({values['warmup_epochs']}) must be fewer than epochs "
            f"({values['epochs']})",
        )
    if values["method"] != "carl":
        for name, off in _CARL_OPTIONS_OFF.items():
            if values[name] != off:
                raise ConfigFieldError(
                    name,
                    f"{name} ({values[name]}) is an option of method carl, not of "
                    f"{values['method']}; set it to {off}",
                )
    block = values["prototype_block_size"]
    if block and (block < 2 or values["num_prototypes"] % block):
        raise ConfigFieldError(
            "prototype_block_size",
            f"prototype_block_size ({block}) must be 0 (off) or a divisor of num_prototypes "
            f"({values['num_prototypes']}) of at least 2",
        )
    if values["small_crop_size"] > values["image_size"]:
        raise ConfigFieldError(
            "small_crop_size",
            f"small_crop_size ({values['small_crop_size']}) must be at most image_size "
            f"({values['image_size']})",
        )
    if values["small_crop_min_scale"] > values["small_crop_max_scale"]:
        raise ConfigFieldError(
            "small_crop_min_scale",
            f"small_crop_min_scale ({values['small_crop_min_scale']}) must be at most "
            f"small_crop_max_scale ({values['small_crop_max_scale']})",
        )


def config_from_json(path: str) -> ml_collections.ConfigDict:
    """The config a run recorded in its config.json.

    Raises:
        RunDirectoryError: If the file is missing, unreadable or not a JSON object.
    """
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except FileNotFoundError as error:
        raise RunDirectoryError(f"{path} is missing; the run directory is incomplete") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunDirectoryError(
            f"{path} is damaged ({type(error).__name__})",
            "restore it, or set overwrite to start afresh",
            fields=("overwrite",),
        ) from error
    if not isinstance(values, dict):
        raise RunDirectoryError(
            f"{path} does not hold a config object",
            "restore it, or set overwrite to start afresh",
            fields=("overwrite",),
        )
    return ml_collections.ConfigDict(values)
