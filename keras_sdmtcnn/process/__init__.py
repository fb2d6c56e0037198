"""The process a command runs in, besides its work.

- ``cluster.py``: the cluster a multi-worker process belongs to (``TF_CONFIG``),
  and which task is the chief.
- ``supervisor.py``: a long command's work runs in a child process, so that
  a crash, an out-of-memory kill, SIGTERM or Ctrl-C always ends with one line
  that says what happened.
- ``logs.py``: which of TensorFlow's native log lines and Python's warnings a
  user sees.
- ``memory.py``: the memory this process may use (limits, cgroups, RAM).
- ``settings.py``: the process-wide TensorFlow settings a recipe's ``speed``
  and ``training`` sections choose (threads, the graph optimizer, the speed
  kernels, determinism, the numeric policy), applied only where measured.

Nothing here imports TensorFlow at module level.
"""
