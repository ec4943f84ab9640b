"""One writer at a time: an exclusive lock on a file or folder that several processes may rewrite.

Two `gallery add` runs at once both read the same gallery, each writes its own version, and the
second rename wins: one run's photos are lost while both report success. Writers therefore hold
``<path>.lock`` while they read, change and write ``path``.

The lock is an advisory ``flock`` on that file, which the kernel releases when the holder exits,
however it exits (SIGKILL included): a lock is never left stale by a killed run. The file also
records who holds it (pid, host, command, since when), so the refused writer can say whom it
waits for. ``flock`` is not reliable across machines on some network file systems: keep a
gallery that several machines write on a local disk, or write it from one machine.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

SUFFIX = ".lock"


class LockHeld(RuntimeError):
    """Another process is writing the same file or folder; the message names it."""


def lock_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + SUFFIX)


@contextmanager
def exclusive(path: str | Path, what: str, *, wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold the write lock of ``path`` (``what`` names it in messages, e.g. "the gallery"); raise
    LockHeld at once, without waiting, when another process holds it. ``wait``: wait for the
    holder to finish instead (for derived data that two long-running processes keep up to date
    together); it is called once, with who holds the lock."""
    where = lock_path(path)
    where.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(where, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = f"{path}: {what} is being written by {_holder(descriptor)}"
            if wait is None:
                raise LockHeld(
                    f"{holder}. Wait until that run ends, then run this command again (the lock is "
                    "released when that process exits)."
                ) from None
            wait(f"{holder}; waiting for it to finish.")
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(_me()).encode(), 0)
        yield
    finally:
        os.close(descriptor)  # closing releases the flock


def _me() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(os.path.basename(part) if i == 0 else part for i, part in enumerate(sys.argv))[:200],
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def _holder(descriptor: int) -> str:
    try:
        record = json.loads(os.pread(descriptor, 4096, 0).decode() or "{}")
        return f"pid {record['pid']} on {record['host']} ({record['command']}, since {record['since']})"
    except (ValueError, KeyError, UnicodeDecodeError):
        return "another process"
