"""What of the runtime's own output reaches a user (``process/logs.py``)."""

import os
import subprocess
import sys

from conftest import REPO

from keras_sdmtcnn.process import logs

INFO = b"I0000 00:00:1796387379.830419    8928 port.cc:153] oneDNN custom operations are on."
WARNING = b"W0000 00:00:1796387401.245680    5731 preemption_notifier.cc:90] SIGTERM caught"
ERROR = (b"E0000 00:00:1796388574.497351   21711 base_collective_executor.cc:252] "
         b"BaseCollectiveExecutor::StartAbort UNAVAILABLE: task 1 stopped sending heartbeats")
FATAL = (b"F0000 00:00:1796389420.121433   26699 env.cc:84] Check failed: ret == 0 (11 vs. 0) "
         b"Thread creation via pthread_create() failed.")
CUINIT = (b"E0000 00:00:1796387380.282348    8928 cuda_platform.cc:52] failed call to cuInit: "
          b"INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)")


def test_error_and_fatal_lines_show_informational_and_warning_lines_do_not(monkeypatch):
    assert logs.shown(ERROR) and logs.shown(FATAL)
    assert not logs.shown(INFO) and not logs.shown(WARNING)
    assert not logs.shown(b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
    assert not logs.shown(b"fully_quantize: 0, inference_type: 6, input_inference_type: FLOAT32")
    assert logs.shown(b"error: a line of our own") and logs.shown(b"Traceback (most recent")


def test_the_cuinit_error_is_hidden_only_where_there_is_no_nvidia_device(monkeypatch):
    monkeypatch.setattr(logs, "_no_nvidia_device", lambda: True)
    assert not logs.shown(CUINIT)
    monkeypatch.setattr(logs, "_no_nvidia_device", lambda: False)
    assert logs.shown(CUINIT)  # on a machine with a GPU it says something worth reading
    # Each hidden error line is named, with its reason.
    assert all(len(rule) == 4 and rule[3] for rule in logs.HIDDEN_ERRORS)


SCRIPT = r"""
import os, warnings
from keras_sdmtcnn import cli

def main(argv):
    for line in (%r, %r, %r):
        os.write(2, line + b"\n")
    warnings.warn("a warning the user can act on", UserWarning)
    warnings.warn("__array__ implementation doesn't accept a copy keyword", DeprecationWarning)

cli.run(main, [])
""" % (INFO, ERROR, WARNING)


def test_a_commands_stderr_keeps_runtime_errors_and_warnings_a_user_can_act_on():
    env = {k: v for k, v in os.environ.items() if k not in ("SDMTCNN_VERBOSE",
                                                           "TF_CPP_MIN_LOG_LEVEL")}
    result = subprocess.run([sys.executable, "-W", "default", "-c", SCRIPT], cwd=REPO,
                            capture_output=True, env={**env, "PYTHONPATH": REPO}, timeout=60)
    assert result.returncode == 0, result.stderr
    err = result.stderr
    assert ERROR in err and INFO not in err and WARNING not in err
    assert b"a warning the user can act on" in err
    assert b"__array__ implementation" not in err
