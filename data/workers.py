"""Worker process pools that Ctrl-C, SIGTERM and SIGKILL stop cleanly.

A plain ``ProcessPoolExecutor`` behaves badly when it is interrupted: a Ctrl-C reaches every
process of the terminal's group, so each worker prints its own KeyboardInterrupt traceback and
the pool breaks; a Ctrl-C that lands while the workers are being forked can leave them started
without the thread that feeds them, and the interpreter then waits for them at exit forever; a
parent killed outright (SIGKILL, the OOM killer) leaves its workers running, orphaned, blocked
on a queue nobody writes to. ``worker_pool`` avoids all three:

- the workers are started (and the pool's manager thread with them) while SIGINT and SIGTERM
  are blocked in the parent, so a signal waits until the pool is whole;
- the workers ignore SIGINT and SIGTERM: the parent alone decides, and on an interruption it
  cancels what has not started, waits for the running tasks and shuts the pool down;
- on Linux each worker asks the kernel to kill it when its parent dies (PR_SET_PDEATHSIG).

Whatever the workers write must still be written atomically (``cadenza.data.atomic``): a worker
killed with its parent may stop in the middle of a file.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from concurrent.futures import ProcessPoolExecutor

_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # no prctl: an orphaned worker then ends when its queue does
        pass


def _init_worker(parent: int, follow_parent: bool, initializer, initargs) -> None:
    for signum in _STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    if follow_parent:
        _die_with_parent()
        if os.getppid() != parent:  # the parent died before the request took effect
            os._exit(1)
    if initializer is not None:
        initializer(*initargs)


def _ready() -> bool:
    return True


@contextlib.contextmanager
def worker_pool(workers: int, initializer=None, initargs: tuple = ()):
    """A started ``ProcessPoolExecutor`` of ``workers`` processes, shut down on leaving the block:
    normally after every task, on an exception (KeyboardInterrupt included) after cancelling the
    tasks that have not started."""
    # Signal masks and PR_SET_PDEATHSIG (which follows the thread that forks) only where the
    # pool is made in the main thread, the only one Python delivers signals to.
    main = threading.current_thread() is threading.main_thread()
    masks = main and hasattr(signal, "pthread_sigmask")  # POSIX
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS) if masks else None
    pool = None
    try:
        try:
            pool = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                                       initargs=(os.getpid(), main, initializer, tuple(initargs)))
            pool.submit(_ready).result()  # forks the workers and starts the manager thread
        finally:
            if previous is not None:
                signal.pthread_sigmask(signal.SIG_SETMASK, previous)  # a pending signal is raised here
        yield pool
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        raise
    else:
        pool.shutdown(wait=True)
