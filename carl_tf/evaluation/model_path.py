"""What `--model` names, told from the path alone and without Keras, so that a path that holds
no model is reported before TensorFlow loads."""

import os

from carl_tf.errors import UsageError
from carl_tf.run.rundir import RunDirectory

ACCEPTED = "pass a train.py workdir, an exported backbone SavedModel directory or a .keras file"


def model_kind(path: str) -> str:
    """The kind of model at `path`: `run` (a train.py workdir), `saved_model` or `keras`.

    Raises:
        UsageError: If nothing is at `path`, or it is none of the three.
    """
    path = os.path.abspath(path)
    if not os.path.exists(path):
        raise UsageError(f"no model at {path}; {ACCEPTED}")
    if os.path.isdir(path) and os.path.exists(RunDirectory(path).config_path):
        return "run"
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return "saved_model"
    if os.path.isfile(path) and path.endswith(".keras"):
        return "keras"
    raise UsageError(f"{path} is neither a train.py workdir, a SavedModel nor a .keras file")
