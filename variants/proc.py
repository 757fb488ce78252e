"""Running tools: argument lists only (never a shell), a time limit per call, stderr kept.

A timed-out process is killed together with everything it started (it runs in its own
process group), so that a hanging encoder that forked cannot keep the pipes open.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .errors import EncoderFailed, EncoderTimeout, EncoderUnavailable

__all__ = ["Completed", "run_tool", "signal_name", "stderr_tail"]

STDERR_TAIL = 2000  # characters of stderr kept in error messages


@dataclass(frozen=True)
class Completed:
    stdout: bytes
    stderr: str
    seconds: float


def stderr_tail(stderr: bytes | str, limit: int = STDERR_TAIL) -> str:
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else stderr
    text = text.strip()
    return text if len(text) <= limit else "…" + text[-limit:]


def signal_name(number: int) -> str:
    """``11`` -> ``"signal 11 (SIGSEGV)"``."""
    try:
        return f"signal {number} ({signal.Signals(number).name})"
    except ValueError:
        return f"signal {number}"


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, AttributeError):
        proc.kill()


def run_tool(
    argv: Sequence[str],
    *,
    what: str,
    stdin: bytes | None = None,
    timeout: float,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Completed:
    """Run ``argv`` and return its stdout; raise a typed error when it cannot start, fails or hangs.

    ``what`` names the step in messages (e.g. ``"encoder libopus"``). ``env``: variables set for
    the process on top of this process's environment.
    """
    start = time.perf_counter()
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=None if env is None else {**os.environ, **env},
            shell=False,
            start_new_session=True,
        )
    except FileNotFoundError:
        raise EncoderUnavailable(
            f"{what}: {argv[0]!r} was not found" + (f" (relative to {cwd})" if cwd else ""),
            hint="install it or correct the path in the variant spec",
        ) from None
    except PermissionError:
        raise EncoderUnavailable(f"{what}: {argv[0]!r} is not executable", hint="chmod +x it") from None
    except OSError as exc:
        raise EncoderUnavailable(f"{what}: {argv[0]!r} could not be started: {exc}") from None
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        try:
            _, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            err = b""
        raise EncoderTimeout(
            f"{what} did not finish within {timeout:g} s and was killed",
            stderr=stderr_tail(err or b"") or None,
        ) from None
    except BaseException:
        _kill_group(proc)
        proc.wait()
        raise
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        how = (
            f"was killed by {signal_name(-proc.returncode)}"
            if proc.returncode < 0
            else f"exited with {proc.returncode}"
        )
        raise EncoderFailed(f"{what} {how}", stderr=stderr_tail(err) or None)
    return Completed(out, stderr_tail(err), seconds)
