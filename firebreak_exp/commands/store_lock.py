"""A file lock beside a SQLite MLflow store, so that processes creating or opening it take turns.

MLflow builds a new SQLite store (tables, migrations, the default experiment) on first use; two processes
doing so at once fail with "database is locked" or a migration error. Every process of this package opens
a SQLite store, creates its experiment and a sweep's parent run while holding ``<store>.lock`` (the
``filelock`` package: ``fcntl.flock`` on POSIX). Other tracking URIs need no lock.
"""
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator, Optional

SQLITE_PREFIX = "sqlite:///"
STORE_LOCK_TIMEOUT_SECONDS = 300.0


class StoreLockedError(RuntimeError):
    """Another process held a SQLite store's lock for longer than the timeout."""


def sqlite_path(uri: str) -> Optional[Path]:
    """The database file of a ``sqlite:///`` tracking URI, or None for any other URI."""
    return Path(uri[len(SQLITE_PREFIX):]) if uri.startswith(SQLITE_PREFIX) else None


def store_lock(uri: str, timeout: float = STORE_LOCK_TIMEOUT_SECONDS):
    """A context that holds ``<database>.lock`` (creating its folder) for a SQLite URI; a no-op otherwise.

    Waiting more than ``timeout`` seconds raises StoreLockedError naming the lock file.
    """
    path = sqlite_path(uri)
    return nullcontext() if path is None else _locked(Path(str(path) + ".lock"), timeout)


@contextmanager
def _locked(lock_path: Path, timeout: float) -> Iterator[None]:
    from filelock import FileLock, Timeout
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(lock_path), timeout=timeout)
    try:
        lock.acquire()
    except Timeout as error:
        raise StoreLockedError(f"the MLflow store lock {lock_path} stayed held by another process for "
                               f"{timeout:g} s; is a process stuck on that store?") from error
    try:
        yield
    finally:
        lock.release()
