"""Choosing the ``tf.distribute`` strategy, and what workers of one job do together.

- ``none``: the default strategy (one device).
- ``mirrored``: ``MirroredStrategy`` over all GPUs, or over ``cpu_replicas``
  logical CPU devices when there is no GPU.
- ``auto`` (default): ``mirrored`` when more than one GPU is visible or
  ``cpu_replicas > 1``, else ``none``.
- ``multi_worker``: ``MultiWorkerMirroredStrategy`` over the workers of
  ``TF_CONFIG`` (``process/cluster.py``), every local GPU of each.

Batch semantics: ``training.batch_size`` is the **global** batch, split
evenly across replicas (it must divide by their number); every loss term is
reduced over the global batch (``losses.global_mean``); BatchNorm is
synchronised across replicas by default when there is more than one.

Workers of a multi-worker job start, resume and end together through
TensorFlow's coordination service: :func:`start_together` (the chief's
verdict: the epoch to start from, or the error that stops every worker),
:func:`broadcast_from_chief` (the weights the chief resumed from) and
:func:`finish_together` (a barrier after the chief's last file, so no
worker leaves while another still needs it). Every wait on a peer is
bounded (``training.peer_timeout``), and a peer lost while training is
named (:func:`lost_task`).
"""

import json
import re

from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.process.cluster import PeerWait

# How long a lost worker takes to be noticed when its machine vanishes
# without closing its connections (on one machine, a killed worker's
# connections close and the others stop at once).
HEARTBEAT_TIMEOUT_S = 10

PACK_BYTES = 32 * 2**20


def split_cpu(replicas):
    """Splits the first CPU into ``replicas`` logical devices (before TF starts using it)."""
    import tensorflow as tf

    if replicas <= 1:
        return
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(replicas)]
        )
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have != replicas:
            raise UserError(
                f"training.cpu_replicas={replicas} but TensorFlow already started with "
                f"{have} CPU device(s): set it before anything else runs in this process."
            ) from None


def replicas_planned(training, cluster=None):
    """How many replicas ``training`` will run on, known before any worker waits on another.

    Every worker of a job is taken to have this machine's devices (as
    TensorFlow's multi-worker strategy does).
    """
    import tensorflow as tf

    gpus = len(tf.config.list_physical_devices("GPU"))
    if cluster is not None:
        return cluster.num_workers * max(gpus, 1)
    if training.distribute == "none":
        return 1
    if gpus:
        return gpus if (training.distribute == "mirrored" or gpus > 1) else 1
    return training.cpu_replicas


def check_batch(training, cluster=None):
    replicas = replicas_planned(training, cluster)
    if training.batch_size % replicas:
        where = (f"the {replicas} replicas of {cluster.num_workers} workers" if cluster
                 else f"the {replicas} replicas")
        raise UserError(
            f"training.batch_size {training.batch_size} is the global batch and must divide "
            f"evenly across {where}: choose a multiple of {replicas}.")
    return replicas


def make_strategy(training, cluster=None):
    """The ``tf.distribute.Strategy`` of ``training.distribute`` (``cluster``: multi-worker)."""
    import tensorflow as tf

    if cluster is not None:
        return _multi_worker_strategy(cluster, training.peer_timeout)
    kind, cpu_replicas = training.distribute, training.cpu_replicas
    split_cpu(cpu_replicas)
    gpus = tf.config.list_logical_devices("GPU")
    if kind == "none" or (kind == "auto" and len(gpus) <= 1 and cpu_replicas <= 1):
        return tf.distribute.get_strategy()
    if gpus:
        return tf.distribute.MirroredStrategy([d.name for d in gpus])
    cpus = tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy(
        [d.name for d in cpus[:max(cpu_replicas, 1)]],
        cross_device_ops=tf.distribute.ReductionToOneDevice(),
    )


def _multi_worker_strategy(cluster, peer_timeout):
    import tensorflow as tf
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.eager import context

    # TensorFlow's own configuration of the coordination service, with the
    # time to detect a lost worker bounded; the strategy keeps it.
    if context.context().coordination_service is None:
        job, _ = cluster.chief
        context.context().configure_coordination_service(
            service_type="standalone", service_leader=f"/job:{job}/replica:0/task:0",
            heartbeat_timeout_in_ms=HEARTBEAT_TIMEOUT_S * 1000,
            shutdown_barrier_timeout_in_ms=10_000,
            coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name=j, num_tasks=len(a))
                              for j, a in cluster.jobs.items()])
    # The gradients all-reduced in packs of up to 32 MB, not one collective each.
    options = tf.distribute.experimental.CommunicationOptions(bytes_per_pack=PACK_BYTES)
    with PeerWait(cluster, peer_timeout, "for every worker to connect"):
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


_START, _FINISH = "keras_sdmtcnn/start", "keras_sdmtcnn/finish"


def start_together(cluster, verdict, timeout, stage=""):
    """The chief's ``verdict`` on every worker: ``{"initial_epoch": N}`` or ``{"error": text}``.

    The chief publishes its verdict (its resume point, or why it cannot
    start) in the coordination service and every worker reads it. To start,
    all meet at a barrier, so none trains alone. To stop, each other worker
    says it has read the verdict, and the chief, which holds the service,
    leaves only after them.
    """
    import time

    from tensorflow.python.eager import context

    ctx, key = context.context(), f"{_START}{stage}"
    ms = int(timeout * 1000)
    with PeerWait(cluster, timeout, "for the chief's start"):
        if cluster.is_chief:
            ctx.set_config_key_value(key, json.dumps(verdict))
        else:
            verdict = json.loads(ctx.get_config_key_value(key, ms))
        if "error" not in verdict:
            ctx.wait_at_barrier(key, ms)
            return verdict
        if not cluster.is_chief:
            ctx.set_config_key_value(f"{key}/read/{cluster.task_type}/{cluster.task_index}", "1")
            raise UserError(f"The chief, {cluster.chief_name}, did not start: {verdict['error']}")
        for job, index, _ in cluster.peers():
            ctx.get_config_key_value(f"{key}/read/{job}/{index}", ms)
        time.sleep(1.0)  # their processes end before the service they report to
    return verdict


def finish_together(cluster, timeout, stage=""):
    """Waits until every worker is done (after the chief's last file is written)."""
    from tensorflow.python.eager import context

    with PeerWait(cluster, timeout, "for the other workers to finish"):
        context.context().wait_at_barrier(f"{_FINISH}{stage}", int(timeout * 1000))


_TASK = re.compile(r"/job:(\w+)/replica:\d+/task:(\d+)")


def lost_task(error, cluster):
    """The name of the worker whose loss ``error`` reports, or ``None``."""
    import tensorflow as tf

    if cluster is None or not isinstance(error, (
            tf.errors.UnavailableError, tf.errors.AbortedError, tf.errors.CancelledError,
            tf.errors.DeadlineExceededError, tf.errors.InternalError)):
        return None
    for job, index in _TASK.findall(str(error)):
        index = int(index)
        if (job, index) != (cluster.task_type, cluster.task_index) and index < len(
                cluster.jobs.get(job, [])):
            return cluster.name(job, index)
    text = str(error).lower()
    if any(word in text for word in ("heartbeat", "coordination", "socket closed", "collective")):
        return "another worker"
    return None


def broadcast_from_chief(strategy, cluster, variables, values=None):
    """Gives every worker's ``variables`` the chief's ``values`` (one all-reduce per dtype).

    After the chief alone has read a checkpoint (a worker with a run
    directory of its own has none to read), the workers must start from
    the same weights and optimizer state. ``values`` (arrays in the order of
    ``variables``) are the chief's; the other workers pass ``None``.
    """
    import numpy as np
    import tensorflow as tf

    if values is None:
        values = [np.zeros(v.shape, v.dtype) for v in variables]
    groups = {}
    for variable, value in zip(variables, values):
        groups.setdefault(tf.as_dtype(variable.dtype), []).append((variable, value))
    for dtype, pairs in groups.items():
        group = [v for v, _ in pairs]
        flat = tf.concat([tf.reshape(tf.constant(value, dtype), [-1]) for _, value in pairs], 0)
        wire = tf.float64 if not dtype.is_floating else dtype

        def replica_fn(vector, wire=wire):
            ctx = tf.distribute.get_replica_context()
            keep = tf.logical_and(tf.constant(cluster.is_chief),
                                  tf.equal(ctx.replica_id_in_sync_group, 0))
            vector = tf.cast(vector, wire)
            return ctx.all_reduce("SUM", tf.where(keep, vector, tf.zeros_like(vector)))

        summed = strategy.experimental_local_results(strategy.run(replica_fn, args=(flat,)))[0]
        offset = 0
        for variable in group:
            size = int(tf.size(variable))
            variable.assign(tf.cast(tf.reshape(summed[offset:offset + size], variable.shape),
                                    dtype))
            offset += size
