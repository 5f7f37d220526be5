"""The errors carl_tf raises for problems a user can fix, at the bottom of every layer.

Each message is one line that names the problem and the fix, so the command-line programs print
it as `error: ...` without a traceback and a notebook shows it as it is.
"""


class CarlError(Exception):
    """Base of every error carl_tf raises on purpose."""


class UsageError(CarlError, ValueError):
    """A setting, flag or path that cannot work; the message names the field and the fix."""


class DataError(UsageError):
    """A data source that cannot be found, read or split as asked."""


class RunDirectoryError(UsageError):
    """A run directory that is damaged, busy, read-only or full."""


class TrainingFailed(CarlError):
    """A run that started but could not finish: the loss became NaN or the assignment collapsed.

    Nothing is exported; the checkpoints of the epochs before the failure are kept.
    """


def first_line(error: BaseException) -> str:
    """The first line of another exception's message, to keep a carl_tf message on one line."""
    lines = str(error).strip().splitlines()
    return lines[0].rstrip(".:") if lines else type(error).__name__
