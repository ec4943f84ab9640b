"""util/lock.py: one writer at a time, a clear message for the second, no stale lock after a kill."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from wildreid.util.lock import LockHeld, exclusive, lock_path

HOLD = textwrap.dedent(
    """
    import sys, time
    from wildreid.util.lock import exclusive
    with exclusive(sys.argv[1], "the gallery"):
        print("held", flush=True)
        time.sleep(60)
    """
)


def hold_in_another_process(path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_a_second_writer_is_refused_with_the_holder_named(tmp_path):
    target = tmp_path / "herd.gallery"
    holder = hold_in_another_process(target)
    try:
        with pytest.raises(LockHeld) as refused:
            with exclusive(target, "the gallery"):
                pass
        message = str(refused.value)
        assert str(target) in message and "the gallery" in message
        assert f"pid {holder.pid}" in message and "Wait until that run ends" in message
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    target = tmp_path / "herd.gallery"
    holder = hold_in_another_process(target)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert lock_path(target).exists()  # the record stays, the lock does not
    with exclusive(target, "the gallery"):
        pass


def test_the_lock_is_released_when_the_writer_is_done(tmp_path):
    target = tmp_path / "herd.gallery"
    with exclusive(target, "the gallery"):
        pass
    holder = hold_in_another_process(target)  # would hang or fail if the lock were still held
    holder.kill()
    holder.wait()
