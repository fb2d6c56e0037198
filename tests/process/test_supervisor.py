"""A command's work in a supervised child (``process/supervisor.py``)."""

import os
import subprocess
import sys

from conftest import REPO

PARENT = r"""
import sys
from keras_sdmtcnn.process.supervisor import supervise
code = supervise("crashing", sys.argv[1:], lambda name: f"stopped by {name}",
                 lambda name: f"the child died ({name})")
print("exit", code)
"""

CHILD = r"""
import ctypes, os, sys
from keras_sdmtcnn.process import supervisor
assert supervisor.in_child()
supervisor.become_child()
how = sys.argv[1]
if how == "segfault":
    ctypes.string_at(0)
elif how == "abort":
    os.abort()
sys.exit(int(how))
"""


def _parent(tmp_path, how):
    (tmp_path / "crashing.py").write_text(CHILD)
    return subprocess.run([sys.executable, "-c", PARENT, how], cwd=REPO, capture_output=True,
                          text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": f"{REPO}:{tmp_path}"})


def test_a_child_that_dies_by_a_signal_gets_one_error_line_and_exit_2(tmp_path):
    for how, name in (("segfault", "SIGSEGV"), ("abort", "SIGABRT")):
        result = _parent(tmp_path, how)
        assert result.stdout.strip() == "exit 2"
        assert result.stderr.strip().splitlines()[-1] == f"error: the child died ({name})"


def test_a_childs_own_exit_status_is_passed_on(tmp_path):
    assert _parent(tmp_path, "3").stdout.strip() == "exit 3"
    assert _parent(tmp_path, "0").stdout.strip() == "exit 0"
