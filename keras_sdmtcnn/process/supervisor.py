"""A command's work in a child process, so that every ending says what happened.

A process that TensorFlow's runtime kills (a segmentation fault, an abort
from a failed CHECK, the kernel's out-of-memory killer) prints nothing of
its own, and one that waits inside the runtime (on a peer that never comes)
does not answer SIGTERM: TensorFlow's preemption notifier takes that signal
over in multi-worker processes. So ``fit`` and ``experiments`` run their
work in a child (the same command, marked by :data:`CHILD`), and the parent,
which loads no TensorFlow and only waits:

- passes the child's exit status on;
- on SIGTERM, SIGINT or SIGHUP ends the child at once (SIGKILL: every file
  is written under a temporary name first, so nothing whole is lost) and
  prints one line saying so;
- when the child dies by a signal it did not send, prints one ``error:``
  line saying what happened and what to try.

The child dies with its parent (``PR_SET_PDEATHSIG`` on Linux), so a
scheduler that kills the parent outright leaves no orphan training on.
"""

import ctypes
import os
import signal
import subprocess
import sys

# The environment variable that marks a supervised child (its value: the parent's pid).
CHILD = "SDMTCNN_SUPERVISED"

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def in_child():
    return bool(os.environ.get(CHILD))


def signal_name(number):
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def become_child():
    """In the child: die with the parent; leave Ctrl-C to the parent."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent still ends the child on a signal
        pass
    if str(os.getppid()) != os.environ.get(CHILD):  # the parent is already gone
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def supervise(module, argv, on_stop, on_death, stderr=2):
    """Runs ``python -m module argv`` as a supervised child; returns the exit status.

    ``on_stop(signal_name)`` gives the line printed when a signal stopped the
    command; ``on_death(signal_name)`` the ``error:`` message when the child
    died by a signal of its own. ``stderr`` is the file descriptor the child
    writes to (the real stderr, not a filtering pipe).
    """
    env = {**os.environ, CHILD: str(os.getpid())}
    stopped = []

    def stop(number, _frame):
        if not stopped:
            stopped.append(number)
            try:
                child.kill()
            except (ProcessLookupError, NameError):
                pass

    previous = {s: signal.signal(s, stop) for s in _STOP_SIGNALS}
    try:
        child = subprocess.Popen([sys.executable, "-m", module, *argv], env=env,
                                 stderr=stderr)
        if stopped:  # a signal came before the child existed
            child.kill()
        code = child.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    if stopped:
        print(on_stop(signal_name(stopped[0])), file=sys.stderr)
        return 128 + stopped[0]
    if code < 0:
        print(f"error: {on_death(signal_name(-code))}", file=sys.stderr)
        return 2
    return code
