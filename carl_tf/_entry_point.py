"""Quiets TensorFlow's start-up notices, in carl_tf's own command-line programs only.

TensorFlow 2.21 prints C++ notices (oneDNN, CUDA stubs, CPU features) to file descriptor 2 while
it loads, whatever TF_CPP_MIN_LOG_LEVEL says. Under that backend `import carl_tf` loads TensorFlow (it registers
carl_tf's Keras classes), and a console script imports the package before its own code runs, so
the programs cannot quiet the import themselves: the package does it for them, and only for them
(`carl-train`, `carl-evaluate`, and the checkout's `train.py` / `evaluate.py`). Every other
program that imports carl_tf keeps TensorFlow's messages on its stderr.
"""

import importlib.util
import json
import os
import sys

_CONSOLE_SCRIPTS = ("carl-train", "carl-evaluate")
_CHECKOUT_SCRIPTS = ("train.py", "evaluate.py")


def is_entry_point() -> bool:
    """Whether this process runs one of carl_tf's command-line programs."""
    script = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    name = os.path.basename(script)
    if name in _CONSOLE_SCRIPTS:
        return True
    checkout = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return name in _CHECKOUT_SCRIPTS and os.path.dirname(script) == checkout


def keras_backend() -> str:
    """The backend Keras will load, found as Keras finds it, without importing Keras.

    KERAS_BACKEND, else the `backend` of `$KERAS_HOME/keras.json` (`~/.keras`), else tensorflow.
    """
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as file:
            return str(json.load(file).get("backend", "tensorflow"))
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def import_tensorflow_quietly() -> None:
    """In an entry point, loads TensorFlow with fd 2 sent to /dev/null; elsewhere does nothing.

    Only under Keras's TensorFlow backend: another backend's run does not load TensorFlow at
    all. TF_CPP_MIN_LOG_LEVEL=0 set by the user keeps the notices.
    """
    if not is_entry_point() or "tensorflow" in sys.modules or keras_backend() != "tensorflow":
        return
    if importlib.util.find_spec("tensorflow") is None:
        return  # Keras says so itself, in one line
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if int(os.environ["TF_CPP_MIN_LOG_LEVEL"] or 0) < 1:
        return
    saved_stderr, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
        os.close(devnull)
