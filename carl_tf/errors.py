"""The base errors carl_tf raises for problems a user can fix, importable from every layer.

Layers derive their own where a message needs more (`carl_tf.run.config.ConfigFieldError`,
`carl_tf.evaluation.report.UnsavedResults`); a caller catches these bases.

Each message is one line that names the problem and the fix, so the command-line programs print
it as `error: ...` without a traceback and a notebook shows it as it is. A fix that changes a
setting names it as the library's user sets it (the config field `image_size`, the `workdir`
argument of `carl_tf.pretrain`); the programs print the same error naming their flags
(`--image_size`, `--workdir`) through `UsageError.with_flags`.
"""

import re
from collections.abc import Callable, Mapping


class CarlError(Exception):
    """Base of every error carl_tf raises on purpose; the message names the problem and the fix.

    Args:
        problem: What is wrong; the whole message when there is no fix.
        fix: How to fix it. Each of `fields` it names is written as the field itself
            (`lower batch_size`) and shown as `names` give it. None with `fields`: "fix FIELD".
        fields: The config fields (or `carl_tf.pretrain` arguments) the fix names, the one to
            change first.
        names: How the message shows each field; by default as the field itself.

    Attributes:
        problem: As given.
        fields: As given.
        field: The first of `fields`, or None.
    """

    def __init__(
        self,
        problem: str,
        fix: str | None = None,
        *,
        fields: tuple[str, ...] = (),
        names: Mapping[str, str] | None = None,
    ):
        self.problem, self.fields = problem, tuple(fields)
        self.field = self.fields[0] if self.fields else None
        self.fix = fix if fix is not None or not self.fields else f"fix {self.field}"
        self.names = dict(names or {})
        super().__init__(self._message())

    def with_flags(self, flag_name: Callable[[str], str]) -> "UsageError":
        """The same error, of the same class, naming `flag_name(field)` for each field."""
        error = type(self).__new__(type(self))
        error.__dict__.update(self.__dict__)
        error.names = {field: flag_name(field) for field in self.fields}
        error.args = (error._message(),)
        return error

    def _message(self) -> str:
        if self.fix is None:
            return self.problem
        if not self.fields:
            return f"{self.problem}; {self.fix}"
        # Whole words only: `holdout` in `--holdout` or `holdout_seed` is not the field.
        field = re.compile(rf"(?<![\w.-])({'|'.join(map(re.escape, self.fields))})(?!\w)")
        fix = field.sub(lambda match: self.names.get(match[1], match[1]), self.fix)
        return f"{self.problem}; {fix}"


class UsageError(CarlError, ValueError):
    """A setting, flag or path that cannot work (arguments as `CarlError`'s)."""


class DataError(UsageError):
    """A data source that cannot be found, read or split as asked."""


class RunDirectoryError(UsageError):
    """A run directory that is damaged, busy, read-only or full."""


class TrainingFailed(CarlError):
    """A run that started but could not finish: the loss became NaN or the assignment collapsed.

    Nothing is exported; the checkpoints of the epochs before the failure are kept. Its fix names
    the fields to change (`fields`), as a `UsageError`'s does.
    """


def first_line(error: BaseException) -> str:
    """The first line of another exception's message, to keep a carl_tf message on one line."""
    lines = str(error).strip().splitlines()
    return lines[0].rstrip(".:") if lines else type(error).__name__
