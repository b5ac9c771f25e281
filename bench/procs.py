"""Processes the benchmark starts and must never leave behind: servers and workers.

Each long-running process (`weir server`, `weir-worker`) is started in its own session, so a
Ctrl-C at the terminal reaches only this script, which then stops them itself: `install()` turns
SIGINT, SIGTERM and SIGHUP into an ordinary exit, and an atexit hook kills every process still
registered (SIGTERM, then SIGKILL to its whole process group after a grace period).

`stop()` reaps a process with `os.wait4`, which gives that process's own rusage (its CPU time
and the children it reaped, e.g. a worker's steps) and peak RSS: how the distributed figures
count the server and the worker separately from the CLI calls that drive them.
"""

import atexit
import os
import signal
import subprocess
import sys
import time

_live = {}


def require(path, what):
    """Exits with a clear message when `path` is not an executable file."""
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        sys.exit(f"error: {what} not found or not executable at {path}: build it with "
                 "`cargo build --release --bin weir --bin weir-worker` or pass its path")


def start(cmd, **kw):
    """Popen in a new session, registered for cleanup."""
    p = subprocess.Popen(cmd, start_new_session=True, **kw)
    _live[p.pid] = p
    return p


def stop(p, sig=signal.SIGTERM, grace=10.0):
    """Sends `sig`, waits up to `grace` seconds, then SIGKILLs the process group. Returns the
    wait4 rusage (CPU of the process and its reaped children, ru_maxrss in KiB)."""
    _live.pop(p.pid, None)
    if p.returncode is not None:
        return None
    try:
        os.kill(p.pid, sig)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            _kill_group(p.pid)
            pid, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.01)
    p.returncode = os.waitstatus_to_exitcode(status)
    _kill_group(p.pid)  # anything it left in its group
    return ru


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def cleanup():
    for p in list(_live.values()):
        try:
            stop(p, grace=3.0)
        except ChildProcessError:
            pass


SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _exit_on_signal(signum, _frame):
    # A second Ctrl-C must not interrupt the cleanup the first one started.
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    raise SystemExit(128 + signum)


def install():
    """Stops every registered process on any exit of this script, Ctrl-C and SIGTERM included."""
    atexit.register(cleanup)
    for s in SIGNALS:
        signal.signal(s, _exit_on_signal)


def run_child_script(cmd):
    """Runs a helper script to its end; if this script is stopped meanwhile, stops it with
    SIGTERM and waits for it, so it stops its own servers (subprocess.run would SIGKILL it)."""
    child = subprocess.Popen(cmd)
    try:
        return child.wait()
    except BaseException:
        try:
            child.send_signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        child.wait()
        raise


def cpu(ru):
    return ru.ru_utime + ru.ru_stime


def run_timed(cmd, cwd=None, env=None):
    """Runs cmd to its end: (wall seconds, CPU seconds of its tree, peak RSS KiB of its
    largest process). Exits naming the command when it fails."""
    start_t = time.perf_counter()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - start_t
    p.returncode = os.waitstatus_to_exitcode(status)
    p.stderr.close()
    if p.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed ({p.returncode}): {err.decode(errors='replace')[-2000:]}")
    return wall, cpu(ru), ru.ru_maxrss
