"""Task-loss weighting strategies: equal, dynamic weight average, uncertainty.

A weighting turns the per-task losses ``{task: L_t}`` into the weighted sum
that enters the objective (the distillation terms are added unweighted).
The formulas are those of MTAN (Liu, Johns and Davison, CVPR 2019) and its
reference code:

- ``equal`` (the SD-MTCNN paper): ``sum_t L_t``.
- ``dwa``, dynamic weight average (MTAN Eq. 7): ``sum_t w_t L_t`` with
  ``w_t(e) = K exp(r_t / T) / sum_k exp(r_k / T)``, ``r_t = L_t(e-1) /
  L_t(e-2)`` the ratio of the task's average training losses over the two
  previous epochs, ``T = 2`` and ``K`` tasks; ``w_t = 1`` in the first two
  epochs. The epoch averages come from the training logs at each epoch's
  end (:meth:`DynamicWeightAverage.end_epoch`, called by a callback that
  ``MultiTaskTrainer.fit`` adds).
- ``uncertainty`` (Kendall et al. 2018, as MTAN implements it):
  ``sum_t exp(-s_t) / 2 * L_t + s_t / 2`` with learned ``s_t = log sigma_t^2``,
  initialised to -0.5.

The weightings are Keras layers so that their state (DWA's loss history,
the learned log-variances) lives in the model's variables: it is
checkpointed, restored on resume and, for ``uncertainty``, trained.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_sdmtcnn import PACKAGE, registry


class LossWeighting(keras.layers.Layer):
    """Base class. ``weigh({task: loss})`` returns ``(total, {task: weight})``."""

    name_in_recipes = None

    def __init__(self, tasks, **kwargs):
        super().__init__(**kwargs)
        self.tasks = list(tasks)

    def weigh(self, task_losses):
        raise NotImplementedError

    def end_epoch(self, task_losses):
        """Called with ``{task: mean training loss}`` after each epoch."""

    def get_config(self):
        return {**super().get_config(), "tasks": self.tasks}


@keras.saving.register_keras_serializable(package=PACKAGE)
class EqualWeighting(LossWeighting):
    """Every task weighs 1 (the paper)."""

    name_in_recipes = "equal"

    def weigh(self, task_losses):
        total = tf.add_n([task_losses[t] for t in self.tasks])
        return total, {t: tf.constant(1.0) for t in self.tasks}


@keras.saving.register_keras_serializable(package=PACKAGE)
class DynamicWeightAverage(LossWeighting):
    """MTAN's dynamic weight average (Eq. 7), temperature 2 by default."""

    name_in_recipes = "dwa"

    def __init__(self, tasks, temperature=2.0, **kwargs):
        super().__init__(tasks, **kwargs)
        if temperature <= 0:
            raise ValueError(f"DWA temperature must be > 0, got {temperature}.")
        self.temperature = float(temperature)
        k = len(self.tasks)
        self.task_weights = self.add_weight(
            shape=(k,), initializer="ones", trainable=False, name="task_weights")
        # Average training losses of the last two epochs (row 0: e-1, row 1: e-2)
        # and how many epochs have been seen.
        self.history = self.add_weight(
            shape=(2, k), initializer="zeros", trainable=False, name="loss_history")
        self.epochs_seen = self.add_weight(
            shape=(), initializer="zeros", trainable=False, name="epochs_seen")

    def weigh(self, task_losses):
        weights = {t: self.task_weights[i] for i, t in enumerate(self.tasks)}
        total = tf.add_n([weights[t] * task_losses[t] for t in self.tasks])
        return total, weights

    def end_epoch(self, task_losses):
        latest = np.array([float(task_losses[t]) for t in self.tasks])
        previous = np.asarray(self.history.numpy()[0])
        seen = int(self.epochs_seen.numpy()) + 1
        self.history.assign(np.stack([latest, previous]).astype("float32"))
        self.epochs_seen.assign(float(seen))
        self.task_weights.assign(
            dwa_weights(latest, previous, self.temperature) if seen >= 2
            else np.ones(len(self.tasks), "float32"))

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature}


def dwa_weights(last, before_last, temperature=2.0):
    """``K softmax(r / T)`` with ``r = last / before_last`` (MTAN Eq. 7)."""
    ratio = np.asarray(last, "float64") / np.maximum(np.asarray(before_last, "float64"), 1e-12)
    e = np.exp(ratio / temperature - np.max(ratio / temperature))
    return (len(ratio) * e / e.sum()).astype("float32")


@keras.saving.register_keras_serializable(package=PACKAGE)
class UncertaintyWeighting(LossWeighting):
    """Learned homoscedastic uncertainty (Kendall et al.), MTAN's form."""

    name_in_recipes = "uncertainty"

    def __init__(self, tasks, initial_log_variance=-0.5, **kwargs):
        super().__init__(tasks, **kwargs)
        self.initial_log_variance = float(initial_log_variance)
        self.log_variances = self.add_weight(
            shape=(len(self.tasks),),
            initializer=keras.initializers.Constant(self.initial_log_variance),
            name="log_variances")

    def weigh(self, task_losses):
        # Each replica's losses are its share of the global-batch value
        # (losses.global_mean) and tf.distribute sums their gradients, so a
        # term that does not scale with the data is split across replicas.
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        weights, total = {}, 0.0
        for i, task in enumerate(self.tasks):
            s = self.log_variances[i]
            weights[task] = 0.5 * tf.exp(-s)
            total += weights[task] * task_losses[task] + 0.5 * s / replicas
        return total, weights

    def get_config(self):
        return {**super().get_config(), "initial_log_variance": self.initial_log_variance}


def get_weighting(name, tasks, **kwargs):
    """Builds the weighting registered as ``name`` (``registry.WEIGHTINGS``)."""
    cls = registry.resolve(registry.WEIGHTINGS, name, "loss weighting")
    return cls(tasks, name=f"{name}_weighting", **kwargs)


class EpochEndWeighting(keras.callbacks.Callback):
    """Feeds each epoch's mean training task losses to the trainer's weighting.

    The losses are those of the trainer's weighted terms (task losses),
    found through the term objects (``MultiTaskTrainer.task_loss_means``).
    """

    def __init__(self, trainer):
        super().__init__()
        self.trainer = trainer

    def on_epoch_end(self, epoch, logs=None):
        self.trainer.loss_weighting.end_epoch(self.trainer.task_loss_means(logs or {}))
