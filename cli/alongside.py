"""The notifications worker `bulklicense worker` starts beside itself, and how that child follows its parent.

The child is a process of its own (`bulklicense notifier`), with its own pool: a receiver, however
slow, never holds one of the parent's chunk slots, and a flood of answers never grows its memory.
It is stopped when the parent stops, and stops by itself if the parent dies without a word.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

STOP_GRACE_S = 30.0
PARENT_CHECK_INTERVAL_S = 1.0


def start_notifier(parent_pid: int) -> subprocess.Popen[bytes]:
    """Start `bulklicense notifier` as a child (same environment, same output) that follows `parent_pid`."""
    return subprocess.Popen([sys.executable, "-m", "cli.main", "notifier", "--parent-pid", str(parent_pid)])


def stop_child(child: subprocess.Popen[bytes], grace_s: float = STOP_GRACE_S) -> None:
    """Ask the child for a warm shutdown (SIGTERM), and kill it if it is still there after `grace_s`."""
    if child.poll() is None:
        child.terminate()
    try:
        child.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def follow_parent(parent_pid: int, interval_s: float = PARENT_CHECK_INTERVAL_S) -> threading.Thread:
    """Send this process SIGTERM (a warm shutdown) once `parent_pid` is no longer its parent."""
    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="bulklicense-parent-watch", daemon=True)
    thread.start()
    return thread
