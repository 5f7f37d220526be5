"""What the command-line programs share: one-line errors instead of tracebacks."""

import logging as logging_module
import os
import sys
from collections.abc import Callable

from absl import flags, logging

from carl_tf.data import DataError


class UsageError(ValueError):
    """A problem the user can fix; its message is one line naming the problem and the fix."""


def quiet_tensorflow_logs() -> None:
    """Keeps TensorFlow's own INFO lines (SavedModel writing etc.) out of the run's log.

    TensorFlow logs both through its "tensorflow" logger and straight through absl's, which
    carl_tf's own messages use too; the filter tells them apart by the file that logged.
    """
    logging_module.getLogger("tensorflow").setLevel(logging_module.WARNING)
    logging.get_absl_handler().addFilter(_drop_tensorflow_info)


def _drop_tensorflow_info(record: logging_module.LogRecord) -> bool:
    from_tensorflow = f"{os.sep}tensorflow{os.sep}" in record.pathname
    return record.levelno >= logging_module.WARNING or not from_tensorflow


def exit_on_usage_error(main: Callable[[list[str]], int | None]) -> Callable[[list[str]], int]:
    """Wraps an `app.run` main so UsageError and DataError print one line and exit with 2."""

    def wrapped(argv: list[str]) -> int:
        quiet_tensorflow_logs()
        try:
            return main(argv) or 0
        except (UsageError, DataError) as error:
            logging.flush()
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)

    return wrapped


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a bad flag reported as one `error:` line like every mistake."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        print(f"error: {error}; see {os.path.basename(argv[0])} --help", file=sys.stderr)
        sys.exit(2)
