"""The cluster a multi-worker process belongs to, read from ``TF_CONFIG`` (no TensorFlow).

TensorFlow's ``MultiWorkerMirroredStrategy`` is configured by the same
environment variable::

    TF_CONFIG='{"cluster": {"worker": ["host0:2222", "host1:2222"]},
                "task": {"type": "worker", "index": 1}}'

Every worker runs the same command with its own ``task``. The **chief** is
the ``chief`` task when the cluster has one, else worker 0 (TensorFlow's
and Keras' rule): it alone writes the run directory. Everything is checked
here, before TensorFlow loads and before any worker waits on another.
"""

import dataclasses
import json
import os

from keras_sdmtcnn.errors import UserError

# The jobs that train (TensorFlow's multi-worker strategy takes these two).
TRAINING_JOBS = ("chief", "worker")


@dataclasses.dataclass(frozen=True)
class Cluster:
    """The training tasks of a cluster and this process's place in it.

    Attributes:
        jobs: ``{job: [address, ...]}`` of the training jobs.
        task_type, task_index: this process's task.
    """

    jobs: dict
    task_type: str
    task_index: int

    @property
    def tasks(self):
        """``[(job, index, address)]`` of every training task, the chief first."""
        return [(job, i, address) for job in TRAINING_JOBS
                for i, address in enumerate(self.jobs.get(job, []))]

    @property
    def num_workers(self):
        return len(self.tasks)

    @property
    def chief(self):
        """``(job, index)`` of the chief."""
        return ("chief", 0) if self.jobs.get("chief") else ("worker", 0)

    @property
    def is_chief(self):
        return (self.task_type, self.task_index) == self.chief

    @property
    def address(self):
        return self.jobs[self.task_type][self.task_index]

    def name(self, job=None, index=None):
        """``"worker 1 (10.0.0.2:2222)"``: a task, this one by default."""
        job = self.task_type if job is None else job
        index = self.task_index if index is None else index
        return f"{job} {index} ({self.jobs[job][index]})"

    @property
    def chief_name(self):
        return self.name(*self.chief)

    def peers(self):
        """``[(job, index, address)]`` of every other training task."""
        return [t for t in self.tasks if (t[0], t[1]) != (self.task_type, self.task_index)]

    def identity(self):
        """A short text naming the job: its chief's address and its size."""
        return f"the {self.num_workers}-worker job whose chief is {self.jobs[self.chief[0]][0]}"


def read_cluster(environ=None):
    """The :class:`Cluster` of ``TF_CONFIG``; a missing or wrong one is a ``UserError``."""
    environ = os.environ if environ is None else environ
    text = environ.get("TF_CONFIG")
    if not text:
        raise UserError(
            "training.distribute: multi_worker needs the TF_CONFIG environment variable on "
            "every worker: '{\"cluster\": {\"worker\": [\"HOST0:PORT\", \"HOST1:PORT\"]}, "
            "\"task\": {\"type\": \"worker\", \"index\": I}}' (docs/scaling.md).")
    try:
        config = json.loads(text)
    except ValueError as e:
        raise UserError(f"TF_CONFIG is not valid JSON ({e}): fix the variable.") from None
    if not isinstance(config, dict):
        raise UserError("TF_CONFIG must be a JSON object with keys cluster and task.")
    cluster, task = config.get("cluster"), config.get("task")
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise UserError("TF_CONFIG needs a \"cluster\" object ({job: [addresses]}) and a "
                        "\"task\" object ({\"type\": ..., \"index\": ...}).")
    jobs = {}
    for job in TRAINING_JOBS:
        addresses = cluster.get(job, [])
        if not isinstance(addresses, list) or not all(_is_address(a) for a in addresses):
            raise UserError(f"TF_CONFIG cluster.{job} must be a list of \"HOST:PORT\" "
                            f"addresses, got {addresses!r}.")
        if addresses:
            jobs[job] = list(addresses)
    if len(jobs.get("chief", [])) > 1:
        raise UserError(f"TF_CONFIG cluster.chief lists {len(jobs['chief'])} addresses; a "
                        "cluster has at most one chief.")
    if not jobs:
        raise UserError("TF_CONFIG's cluster has no chief or worker task: list the workers' "
                        "addresses under cluster.worker.")
    task_type, index = task.get("type"), task.get("index", 0)
    if task_type not in jobs:
        raise UserError(
            f"TF_CONFIG task.type is {task_type!r}; this cluster's training jobs are "
            f"{', '.join(jobs)}.")
    if not isinstance(index, int) or isinstance(index, bool) or not (
            0 <= index < len(jobs[task_type])):
        raise UserError(
            f"TF_CONFIG task.index {index!r} is outside the cluster: job {task_type} has "
            f"{len(jobs[task_type])} task(s), indices 0 to {len(jobs[task_type]) - 1}.")
    return Cluster(jobs, task_type, index)


def _is_address(value):
    if not isinstance(value, str) or ":" not in value:
        return False
    host, port = value.rsplit(":", 1)
    return bool(host) and port.isdigit()


def unreachable(cluster, timeout=1.0):
    """The peers of ``cluster`` that do not accept a TCP connection now (their names)."""
    import socket

    missing = []
    for job, index, address in cluster.peers():
        host, port = address.rsplit(":", 1)
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                pass
        except OSError:
            missing.append(cluster.name(job, index))
    return missing


def waited_message(cluster, seconds, doing="for the other workers"):
    """The one line a worker gives after waiting ``seconds`` in vain, naming who did not answer."""
    missing = unreachable(cluster)
    who = (f"no answer from {', '.join(missing)}" if missing else
           "every peer's address answers, but not every worker joined")
    return (f"{cluster.name()} waited {seconds:g} s {doing}: {who}. Start the same command "
            "on every worker of TF_CONFIG, check its addresses, or raise training.peer_timeout.")


class PeerWait:
    """Bounds a wait on the other workers: past ``seconds``, one ``error:`` line and exit 2.

    A worker waiting inside TensorFlow's runtime for a peer (to connect, or
    at a barrier) holds Python's interpreter lock, so no Python thread can
    end the wait. In a supervised process (``supervisor.py``) an alarm
    (SIGALRM, whose default action ends the process) does, and the parent
    gives the line (``waited_message``); elsewhere (a notebook) a timer
    thread tries. A timeout that TensorFlow itself reports is the same line.
    """

    def __init__(self, cluster, seconds, doing):
        self.cluster, self.seconds, self.doing = cluster, seconds, doing
        self._timer = None

    def __enter__(self):
        import signal
        import threading

        from keras_sdmtcnn.process.supervisor import in_child

        if in_child() and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.setitimer(signal.ITIMER_REAL, self.seconds + 2)  # TensorFlow's own first
        else:
            self._timer = threading.Timer(self.seconds + 2, self._expired)
            self._timer.daemon = True
            self._timer.start()
        return self

    def __exit__(self, exc_type, exc, traceback):
        import signal

        if self._timer is None:
            signal.setitimer(signal.ITIMER_REAL, 0)
        else:
            self._timer.cancel()
        if exc_type is not None and exc_type.__name__ == "DeadlineExceededError":
            raise UserError(waited_message(self.cluster, self.seconds, self.doing)) from None
        if exc_type is not None and exc_type.__name__ == "UnavailableError":
            raise UserError(f"{self.cluster.name()} lost contact with the other workers "
                            f"while waiting {self.doing}: one of them stopped. Run the same "
                            "command again on every worker.") from None
        return False

    def _expired(self):
        from keras_sdmtcnn.process.logs import real_stderr

        message = waited_message(self.cluster, self.seconds, self.doing)
        os.write(real_stderr(), f"error: {message}\n".encode())
        os._exit(2)
