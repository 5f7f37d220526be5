"""What the command-line programs share: one-line errors instead of tracebacks."""

import logging as logging_module
import sys
from collections.abc import Callable

from absl import logging

from carl_tf.data import DataError


class UsageError(ValueError):
    """A problem the user can fix; its message is one line naming the problem and the fix."""


def quiet_tensorflow_logs() -> None:
    """Keeps TensorFlow's own Python INFO lines (SavedModel writing etc.) out of the run's log."""
    logging_module.getLogger("tensorflow").setLevel(logging_module.WARNING)


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
