"""What the command-line programs share: short log lines, one-line errors with exit codes, and
TensorFlow loaded only after the flags are checked (`load_keras`), so a mistake is reported at once.

Exit codes: 0 done, 1 the run failed (NaN loss, collapse), 2 a usage, data or run-directory
problem, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM). An interrupted train.py names the
epoch it was in (`carl_tf.run.callbacks.Interrupted`).
"""

import logging
import os
import sys
from collections.abc import Callable

from absl import flags
from absl import logging as absl_logging

from carl_tf import _entry_point, method
from carl_tf.errors import CarlError, TrainingFailed
from carl_tf.run import signals

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 130, 143


def setup_logging() -> None:
    """carl_tf's messages as short lines on stderr; TensorFlow's INFO lines kept out."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    # A job's closing lines (carl_tf.run.progress.RESULT): the program prints its own on stdout.
    handler.addFilter(lambda record: not getattr(record, "carl_tf_result", False))
    package = logging.getLogger("carl_tf")
    package.handlers[:] = [handler]
    package.setLevel(logging.INFO)
    package.propagate = False
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    absl_logging.set_verbosity(absl_logging.WARNING)


def load_keras() -> None:
    """Loads TensorFlow (its start-up notices sent to /dev/null), Keras and carl_tf's classes.

    The programs call it once their flags and config are checked; nothing before it imports
    Keras, so a bad flag costs a second, not the ten or more of TensorFlow's start.
    """
    _entry_point.import_tensorflow_quietly()
    method.register_saved_classes()


def run_main(
    main: Callable[[list[str]], int | None], flag_name: Callable[[str], str]
) -> Callable[[list[str]], int]:
    """Wraps an `app.run` main: carl_tf's errors become one `error:` line and an exit code.

    An error with a `results_text` (`carl_tf.evaluation.report.UnsavedResults`: figures whose
    file could not be written) has that text printed on stdout first.

    Args:
        main: The program's body.
        flag_name: Maps a config field, or an argument of `carl_tf.pretrain` beside the config
            (`workdir`, `overwrite`, `extend`), to the flag that sets it: an error that names
            fields (`UsageError.fields`) is printed naming the flags instead.
    """

    def wrapped(argv: list[str]) -> int:
        setup_logging()
        signals.install()
        try:
            return main(argv) or 0
        except CarlError as error:  # one with `results_text` measured figures it could not save
            if error.fields:
                error = error.with_flags(flag_name)
            code = EXIT_FAILED if isinstance(error, TrainingFailed) else EXIT_USAGE
            return _fail(str(error), code, shown=getattr(error, "results_text", None))
        except KeyboardInterrupt as error:  # Ctrl-C, Terminated, and Interrupted from either
            return _stopped(error)

    return wrapped


def interrupted_message(what: str) -> str:
    """The line printed when a program is stopped by a signal."""
    return f"{what}; run the same command to resume"


def _stopped(error: KeyboardInterrupt) -> int:
    """The line and exit code of a Ctrl-C or SIGTERM, naming the epoch when train.py knows it."""
    # carl_tf.run.callbacks.Interrupted, whose module is loaded only once training runs.
    epoch = getattr(error, "epoch", None)
    signal_error = error.__cause__ if epoch is not None else error
    terminated = isinstance(signal_error, signals.Terminated)
    what = "terminated" if terminated else "interrupted"
    if epoch is not None:
        what += f" during epoch {epoch}"
    if sys.stderr.isatty():  # after the terminal's "^C" or mid-way through a progress bar
        sys.stdout.flush()
        print(file=sys.stderr)
    return _fail(interrupted_message(what), EXIT_TERMINATED if terminated else EXIT_INTERRUPTED)


_HELP = ("--help", "-h", "-?", "--helpshort", "--helpfull")


def parse_flags(argv: list[str], help_module: str | None = None) -> list[str]:
    """absl's flag parsing, with a bad flag reported as one `error:` line like every mistake.

    `--help` prints the flags of `help_module` (the program's own) and exits 0, as command-line
    programs do; absl's own help exits 1.
    """
    if help_module and any(arg in _HELP for arg in argv[1:]):
        doc = sys.modules[help_module].__doc__ or ""
        print(f"{doc.strip()}\n\nflags:\n{flags.FLAGS.module_help(help_module)}")
        sys.exit(0)
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        print(f"error: {_one_line(error)}; see {os.path.basename(argv[0])} --help", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def _one_line(error: flags.Error) -> str:
    """absl's message, or for a config file that raised, that file's own error."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if len(lines) > 1 and any(line.startswith("Traceback") for line in lines):
        flag = lines[0].split(":", 1)[0]  # "flag --config=PATH"
        return f"{flag}: {lines[-1].split(': ', 1)[-1]}"
    return " ".join(lines)


def _fail(message: str, code: int, shown: str | None = None) -> int:
    """Prints `shown` (results not to lose) on stdout, then the `error:` line; exits `code`."""
    if shown:
        print(shown)
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)
