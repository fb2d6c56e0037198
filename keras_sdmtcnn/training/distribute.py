"""Choosing the ``tf.distribute`` strategy and the numeric policy of a run.

- ``none``: the default strategy (one device).
- ``mirrored``: ``MirroredStrategy`` over all GPUs, or over ``cpu_replicas``
  logical CPU devices when there is no GPU.
- ``auto`` (default): ``mirrored`` when more than one GPU is visible or
  ``cpu_replicas > 1``, else ``none``.
- ``multi_worker``: ``MultiWorkerMirroredStrategy`` configured by the
  standard ``TF_CONFIG`` environment variable.

Batch semantics: ``training.batch_size`` is the **global** batch, split
evenly across replicas (it must divide by their number); every loss term is
reduced over the global batch (``losses.global_mean``); BatchNorm is
synchronised across replicas by default when there is more than one.
"""

import json
import os

from keras_sdmtcnn.errors import UserError


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


def make_strategy(kind="auto", cpu_replicas=1):
    """The ``tf.distribute.Strategy`` for ``training.distribute``."""
    import tensorflow as tf

    if kind == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise UserError(
                "training.distribute: multi_worker needs the TF_CONFIG environment "
                "variable (cluster and task of this worker)."
            )
        try:
            json.loads(os.environ["TF_CONFIG"])
        except ValueError as e:
            raise UserError(f"TF_CONFIG is not valid JSON: {e}") from None
        return tf.distribute.MultiWorkerMirroredStrategy()
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


def set_precision(policy):
    """Sets the Keras dtype policy (``none`` is float32)."""
    import keras

    keras.mixed_precision.set_dtype_policy("float32" if policy == "none" else policy)
