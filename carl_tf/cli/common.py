"""What the command-line programs share: short log lines, and one-line errors with exit codes.

Exit codes: 0 done, 1 the run failed (NaN loss, collapse), 2 a usage, data or run-directory
problem, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).
"""

import logging
import os
import signal
import sys
from collections.abc import Callable

from absl import flags
from absl import logging as absl_logging

from carl_tf.errors import CarlError, TrainingFailed
from carl_tf.run.config import ConfigFieldError

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 130, 143


class Terminated(BaseException):
    """SIGTERM, raised in the main thread so the run unwinds like after Ctrl-C."""


def setup_logging() -> None:
    """carl_tf's messages as short lines on stderr; TensorFlow's INFO lines kept out."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    package = logging.getLogger("carl_tf")
    package.handlers[:] = [handler]
    package.setLevel(logging.INFO)
    package.propagate = False
    logging.getLogger("tensorflow").setLevel(logging.WARNING)
    absl_logging.set_verbosity(absl_logging.WARNING)


def run_main(
    main: Callable[[list[str]], int | None], flag_name: Callable[[str], str]
) -> Callable[[list[str]], int]:
    """Wraps an `app.run` main: carl_tf's errors become one `error:` line and an exit code.

    Args:
        main: The program's body.
        flag_name: Maps a config field to the flag that sets it, for ConfigFieldError.
    """

    def wrapped(argv: list[str]) -> int:
        setup_logging()
        signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            return main(argv) or 0
        except ConfigFieldError as error:
            return _fail(str(error.with_flag(flag_name(error.field))), EXIT_USAGE)
        except TrainingFailed as error:
            return _fail(str(error), EXIT_FAILED)
        except CarlError as error:
            return _fail(str(error), EXIT_USAGE)
        except KeyboardInterrupt:
            return _fail(interrupted_message("interrupted"), EXIT_INTERRUPTED)
        except Terminated:
            return _fail(interrupted_message("terminated"), EXIT_TERMINATED)

    return wrapped


def interrupted_message(what: str) -> str:
    """The line printed when a program is stopped by a signal."""
    return f"{what}; run the same command to resume"


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


def _fail(message: str, code: int) -> int:
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _raise_terminated(signum, frame):
    raise Terminated()
