"""How carl_tf loads TensorFlow: after the flags in its programs, once and quietly.

TensorFlow 2.21 prints C++ notices (oneDNN, CUDA stubs, CPU features) to file descriptor 2 while
it loads, whatever TF_CPP_MIN_LOG_LEVEL says, and prints the oneDNN and CUDA ones twice (two of
its libraries each initialise logging). carl_tf's command-line programs (`carl-train`,
`carl-evaluate`, `carl-embed`, and the checkout's `train.py`, `evaluate.py`, `embed.py`) check
their flags before TensorFlow loads, then load it with those notices sent to /dev/null
(`carl_tf.cli.common.load_keras`). Any other program that imports carl_tf gets TensorFlow's
notices on its stderr, each once (`import_tensorflow_once`).
"""

import importlib.util
import json
import os
import sys

_CONSOLE_SCRIPTS = ("carl-train", "carl-evaluate", "carl-embed")
_CHECKOUT_SCRIPTS = ("train.py", "evaluate.py", "embed.py")


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


def import_tensorflow_once() -> None:
    """Loads TensorFlow, printing each of its start-up notices once instead of twice.

    fd 2 goes to a temporary file while TensorFlow loads; then every line of it is written back
    to fd 2 except repeats of a notice already written (TensorFlow's lines differ only in their
    timestamp). Nothing is hidden: a line that is not a repeat, an error included, is printed.
    Does nothing when TensorFlow is already loaded, not installed, or not Keras's backend.
    """
    if "tensorflow" in sys.modules or keras_backend() != "tensorflow":
        return
    if importlib.util.find_spec("tensorflow") is None:
        return
    import tempfile

    sys.stderr.flush()
    saved_stderr = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved_stderr, 2)
            os.close(saved_stderr)
            captured.seek(0)
            text = captured.read().decode(errors="replace")
            seen, kept = set(), []
            for line in text.splitlines(keepends=True):
                # "I0000 00:00:1796483899.548208    8150 port.cc:153] message": the message.
                key = line.split("] ", 1)[1] if "] " in line[:80] else line
                if key not in seen:
                    seen.add(key)
                    kept.append(line)
            if kept:
                os.write(2, "".join(kept).encode())
