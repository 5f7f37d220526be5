"""The methods: CARL's objective, schedule, networks and views, the `CARL` model, and the SimCLR
baseline on the same parts (`carl_tf.method.simclr`).

It imports nothing of carl_tf's data, run machinery, evaluation or command line, and this file
imports no Keras: `import carl_tf` and the programs call `register_saved_classes` when they load
Keras.
"""

import importlib

# The modules whose Keras classes a `.keras` file of carl_tf names: the two models (with the
# backbones, heads and views they import), the fused BatchNormalization, the optimizer of a
# compiled file, and lambda's schedule.
_SAVED_CLASS_MODULES = ("model", "simclr", "normalization", "optimizer", "schedules")


def register_saved_classes() -> None:
    """Imports every module whose Keras classes carl_tf saves, registering them with Keras."""
    for module in _SAVED_CLASS_MODULES:
        importlib.import_module(f"carl_tf.method.{module}")
