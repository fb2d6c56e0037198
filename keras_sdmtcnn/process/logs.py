"""What of the runtime's own output a user sees.

Commands are quiet by default: TensorFlow's informational and warning log
lines, and a few Python warnings that no user can act on, are hidden. Error
and fatal lines of the runtime (``E...``, ``F...``: a CUDA, NCCL or gRPC
failure, a failed CHECK that aborts the process) always reach the user,
except the ones named in :data:`HIDDEN_ERRORS`, each with the reason.
``--verbose`` (or ``SDMTCNN_VERBOSE=1``) shows everything.
"""

import atexit
import logging
import os
import re
import sys
import threading
import warnings

# A record of TensorFlow's C++ runtime (absl's format), written straight to
# file descriptor 2: "I0000 00:00:1796.53   8928 port.cc:153] oneDNN ...".
# TF_CPP_MIN_LOG_LEVEL does not reach the lines written before absl starts.
_RECORD = re.compile(rb"^([IWEF])\d{4} \d\d:\d\d:[\d.]+ +\d+ ([\w./-]+):\d+\] ?(.*)")

# Informational lines of the runtime that are not in absl's format.
_INFO_LINES = re.compile(
    rb"^(WARNING: All log messages before absl::InitializeLog\(\) is called"  # absl's start
    rb"|To enable the following instructions:"  # the second line of cpu_feature_guard's notice
    rb"|INFO: Created TensorFlow Lite XNNPACK delegate"  # LiteRT's interpreter
    rb"|INFO: Initialized TensorFlow Lite runtime"
    rb"|fully_quantize: \d+, inference_type: \d+"  # the int8 converter's settings
    rb"|/job:\w+/replica:\d+/task:\d+$)"  # coordination service: "Example stragglers:"
)


def _no_nvidia_device():
    return not os.path.exists("/dev/nvidiactl")


# Error lines of the runtime that are hidden all the same: (file, message
# pattern, when, why). Each is named: an unknown error line always shows.
HIDDEN_ERRORS = (
    ("cuda_platform.cc", rb"failed call to cuInit", lambda: _no_nvidia_device(),
     "TensorFlow's CUDA build probes for a GPU on every start; on a machine without an "
     "NVIDIA device there is nothing to fix"),
)

# Python warnings hidden unless --verbose: (category, message pattern, why).
HIDDEN_WARNINGS = (
    (DeprecationWarning, r"__array__ implementation doesn't accept a copy keyword",
     "Keras converting TensorFlow tensors under NumPy 2, not the user's code"),
)


def shown(line):
    """Whether a line written to file descriptor 2 reaches a user (not ``--verbose``)."""
    record = _RECORD.match(line)
    if record is None:
        return not _INFO_LINES.match(line)
    level, source, message = record.groups()
    if level in b"IW":
        return False
    for name, pattern, when, _ in HIDDEN_ERRORS:
        if source.endswith(name.encode()) and re.search(pattern, message) and when():
            return False
    return True


class NativeLogFilter:
    """Passes file descriptor 2 through :func:`shown`.

    No library filters a file descriptor (the runtime's lines never pass
    through Python), so fd 2 becomes a pipe read by a thread that forwards
    every shown line to the real stderr. ``stop`` (at exit) restores fd 2
    and waits until every line written before it has been forwarded.
    """

    def start(self):
        self.saved = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self.thread = threading.Thread(target=self._pump, args=(read,), daemon=True)
        self.thread.start()
        atexit.register(self.stop)
        return self

    def _pump(self, read):
        with os.fdopen(read, "rb", buffering=0) as pipe:
            pending = b""
            while True:
                chunk = pipe.read(65536)
                if not chunk:
                    break
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if shown(line):
                        os.write(self.saved, line + b"\n")
            if pending and shown(pending):
                os.write(self.saved, pending)

    def stop(self):
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self.saved, 2)  # the pipe's last writer closes: the thread sees its end
        self.thread.join(timeout=10)


_FILTER = []


def real_stderr():
    """The file descriptor of the real stderr (before any filtering)."""
    return _FILTER[0].saved if _FILTER else 2


def quiet():
    """Hides what the user cannot act on (see the module docstring)."""
    for name in ("tensorflow", "absl", "keras"):
        logging.getLogger(name).setLevel(logging.ERROR)
    for category, pattern, _ in HIDDEN_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    if not _FILTER:
        try:
            _FILTER.append(NativeLogFilter().start())
        except OSError:  # no file descriptor 2 to filter: nothing to hide
            pass
