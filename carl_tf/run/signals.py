"""Ctrl-C and SIGTERM in the programs: raised at once, or at the next batch while training.

Python runs a signal handler between any two bytecodes, also inside functions that C code
calls back: the garbage collector's callbacks (JAX registers one, and TensorFlow imports JAX
when it is installed), weakref finalizers, TensorFlow's hooks. An exception raised there is
printed as "Exception ignored" and lost, so the run trains on, or it aborts the interpreter
(exit code -6 instead of 143). So while `deferred` is active, around Keras's `fit`, the
handlers only record the signal and `raise_pending` raises it where Python code runs on its
own: after the batch, from `carl_tf.run.callbacks.RaiseSignals`, or when `fit` returns. A
second signal while one waits is raised at once, for a step that never returns.

Nothing here imports Keras: the programs install the handlers before TensorFlow loads.
"""

import contextlib
import signal
from collections.abc import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so the run unwinds like after Ctrl-C.

    A KeyboardInterrupt, so every cleanup and `Interrupted` that Ctrl-C triggers, SIGTERM
    triggers too.
    """


class _State:
    deferring = False
    pending: KeyboardInterrupt | None = None


def install() -> None:
    """Makes SIGINT raise KeyboardInterrupt and SIGTERM raise `Terminated`, deferred in `fit`."""
    signal.signal(signal.SIGINT, _handle)
    signal.signal(signal.SIGTERM, _handle)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Within it, an installed handler records its signal for `raise_pending` to raise.

    A signal still waiting when the block ends is raised there. Without `install`, Python's
    own handlers act as always.
    """
    _State.deferring, _State.pending = True, None
    try:
        yield
    finally:
        _State.deferring = False
    raise_pending()


def raise_pending() -> None:
    """Raises the signal that arrived while deferred, if one did."""
    error, _State.pending = _State.pending, None
    if error is not None:
        raise error


def _handle(signum, frame):
    error = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
    if _State.deferring and _State.pending is None:
        _State.pending = error
        return
    _State.pending = None
    raise error
