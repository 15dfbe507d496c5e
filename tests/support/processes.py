"""Child processes a test starts: never left running when the test fails."""

from __future__ import annotations

import subprocess


def communicate_or_kill(process: subprocess.Popen, input: str | None = None, timeout: float = 60):
    """`process.communicate`, killing the child (and failing the test) if it outlives `timeout`."""
    try:
        return process.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
