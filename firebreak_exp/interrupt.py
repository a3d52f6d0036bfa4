"""Graceful stop: SIGINT (Ctrl-C), SIGTERM and submitit's pre-timeout signal end a run at a safe point.

Inside :meth:`GracefulStop.deferred` (the training loop) the first signal is only noted; the loop acts on
it once the vector step in flight is finished (never recorded twice), writes a checkpoint and raises
:class:`Interrupted`. Outside it, and for a second signal anywhere, Interrupted is
raised at once. The command turns Interrupted into one line and exit status ``128 + signal`` (130 for
SIGINT, 143 for SIGTERM).

In a submitit job (Hydra's ``submitit_slurm``/``submitit_local`` launchers) the pre-timeout signal
(``SIGUSR2`` unless submitit is told otherwise) is handled the same way, then handed to submitit's own
handler, which requeues the job; the requeued job continues from the checkpoint (``resume=auto``).

Environment worker processes ignore these signals (:func:`ignore_stop_signals`): a Ctrl-C reaches the
whole process group, and the parent stops its workers itself.
"""
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_received: Optional[int] = None    # the first stop signal this process received


def received_stop_signal() -> Optional[int]:
    """The first stop signal this process received (None: none), e.g. to mark a sweep's parent run KILLED."""
    return _received


def _note(signum: int) -> None:
    global _received
    if _received is None:
        _received = signum


def requeue_signal() -> Optional[int]:
    """The signal submitit sends before a job's time limit, when this process is a submitit job."""
    if not os.environ.get("SUBMITIT_EXECUTOR"):
        return None
    from submitit import JobEnvironment
    return JobEnvironment._usr_sig()


class Interrupted(BaseException):
    """The run stopped on a signal. A BaseException, like KeyboardInterrupt: ``except Exception`` in between
    (Hydra's job runner among them) lets it through.

    ``episode``: finished episodes when it stopped; ``checkpoint``: the checkpoint to resume from (None
    when there is none); ``run_dir``: the run folder; ``at_once``: a second signal cut the stop short;
    ``requeue``: submitit's handler to call once the run is recorded as stopped.
    """

    def __init__(self, signum: int, at_once: bool = False, requeue: Optional[Callable] = None):
        super().__init__(signal.Signals(signum).name)
        self.signum, self.at_once, self.requeue = signum, at_once, requeue
        self.episode: Optional[int] = None
        self.checkpoint: Optional[Path] = None
        self.run_dir: Optional[Path] = None

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    def line(self) -> str:
        """The one line printed when the command stops, saying what to run to continue."""
        how = f"second {self.signal_name}, stopped at once" if self.at_once else self.signal_name
        where = "" if self.episode is None else f" at episode {self.episode}"
        head = f"firebreak_exp: interrupted{where} ({how})"
        if self.checkpoint is None:
            return f"{head}; no checkpoint was written yet: run the same command again to start over"
        if self.requeue is not None:
            return f"{head}; checkpoint {self.checkpoint}; the job is requeued and continues from it"
        return f"{head}; checkpoint {self.checkpoint}; resume with: python -m firebreak_exp resume={self.run_dir}"


class GracefulStop:
    """The signal handlers of one process while a run is in progress (see the module's docstring)."""

    def __init__(self):
        self.signum: Optional[int] = None
        self._deferring = 0
        self._previous: dict = {}

    @property
    def requested(self) -> bool:
        """Whether a stop signal arrived (act on it with :meth:`interrupted`)."""
        return self.signum is not None

    def interrupted(self) -> Interrupted:
        """The Interrupted exception for the signal that arrived (raise it at the safe point)."""
        return Interrupted(self.signum, requeue=self._requeue_handler(self.signum))

    @contextmanager
    def deferred(self) -> Iterator["GracefulStop"]:
        """Inside this block a first signal is only noted; the caller checks :attr:`requested`."""
        self._deferring += 1
        try:
            yield self
        finally:
            self._deferring -= 1

    def _requeue_handler(self, signum: int) -> Optional[Callable]:
        previous = self._previous.get(signum)
        return previous if signum == requeue_signal() and callable(previous) else None

    def _handle(self, signum: int, frame) -> None:
        _note(signum)
        if self.signum is not None:
            raise Interrupted(signum, at_once=True)
        self.signum = signum
        if not self._deferring:
            raise self.interrupted()

    def _install(self) -> None:
        for signum in STOP_SIGNALS + ((requeue_signal(),) if requeue_signal() else ()):
            self._previous[signum] = signal.signal(signum, self._handle)

    def _uninstall(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}


_active: Optional[GracefulStop] = None


@contextmanager
def graceful_stop() -> Iterator[GracefulStop]:
    """The process's GracefulStop, its handlers installed for the duration (nested uses share it).

    Off the main thread (where Python cannot install handlers) it is one that never sees a signal.
    """
    global _active
    if _active is not None:
        yield _active
        return
    stop = GracefulStop()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    stop._install()
    _active = stop
    try:
        yield stop
    except Interrupted:
        for signum in stop._previous:   # the command is on its way out: another signal ends it at once
            signal.signal(signum, _exit_at_once)
        stop._previous = {}
        raise
    finally:
        stop._uninstall()
        _active = None


def stop_sweep_on_signals() -> dict:
    """For a sweep's own process: SIGINT or SIGTERM between its jobs, or while a launcher waits for them, raises
    Interrupted at once (inside a job run here, the job's :func:`graceful_stop` takes over). Returns the
    handlers it replaced (signal -> handler); on a thread other than the main one it does nothing."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def stop(signum: int, frame) -> None:
        _note(signum)
        raise Interrupted(signum)

    return {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}


def _exit_at_once(signum: int, frame) -> None:
    os.write(2, f"firebreak_exp: stopped at once (second {signal.Signals(signum).name})\n".encode())
    os._exit(128 + signum)


def ignore_stop_signals() -> None:
    """For worker processes: ignore SIGINT, SIGTERM and submitit's signal; the parent stops its workers."""
    for signum in STOP_SIGNALS + ((requeue_signal(),) if requeue_signal() else ()):
        signal.signal(signum, signal.SIG_IGN)
