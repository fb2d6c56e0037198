"""Loss terms: what a trainer adds up, one small object per term.

A :class:`Term` declares the names it logs (:meth:`Term.names`) and returns
their values (:meth:`Term.values`) from the targets and the dict of the
trainer's outputs, each already reduced over the global batch
(``losses.global_mean``). It may own variables (an adaptor, as a
sublayer), with their optimizer settings: their learning rate
(``learning_rate``) and their weight decay (a penalty on their kernels).

How a trainer adds them up (``trainer.py``): the terms of each task in
order; its *weighted* terms (task losses) summed, times the task's weight,
go to the weighting; its other terms (distillation) are added as they are;
terms of no task (a method's feature terms) are added last; terms with
``in_loss = False`` are only logged. The objectives (``objectives.py``) and
the methods (``methods.py``) make the lists; a new distillation method is
one more term (a test adds FitNets-style hints from outside the package).

- :class:`TaskLoss`: a branch's task loss (Eq. 2), ``{task}_{branch}_loss``.
- :class:`EnsembleTaskLoss`: the task loss of the averaged prediction
  (Eq. 6), ``{task}_ensemble_loss``.
- :class:`OutputDistillation`: lambda times a distance between the
  Teacher's and the Student's outputs (Eq. 3-4, or KDAM's Cauchy-Schwarz,
  or any callable), ``{task}_kd_loss``.
- :class:`FeatureDistillation`: Li & Bilen's adaptor and feature distance,
  ``{task}[_middle]_feature_loss``.
"""

import math

import keras
import tensorflow as tf

from keras_sdmtcnn import PACKAGE
from keras_sdmtcnn.tasks import get_task, output_name
from keras_sdmtcnn.training import losses as losses_lib


def add_up(terms, tasks, y_true, y_pred, weighting=None, weight=lambda task: 1.0):
    """Every term's value, and ``loss``: the sum the module docstring describes.

    Task by task, in the order of ``tasks``: its terms' values (in list
    order); its weighted terms summed, times ``weight(task)``, for the
    weighting; its other terms in the loss added as they are. Then the
    weighting's total of the tasks' losses (equal weights without one), and
    last the terms of no task. The order of the sums is fixed, so a run
    rounds the same way every time.
    """
    values, task_losses, total = {}, {}, 0.0
    for task in tasks:
        weighted = []
        for term in (t for t in terms if t.task == task):
            part = term.values(y_true, y_pred)
            values.update(part)
            if term.weighted:
                weighted += list(part.values())
            elif term.in_loss:
                for value in part.values():
                    total += value
        if weighted:
            task_loss = weighted[0]
            for value in weighted[1:]:
                task_loss = task_loss + value
            task_losses[task] = weight(task) * task_loss
    if weighting is None:
        total += tf.add_n([task_losses[t] for t in tasks if t in task_losses])
    else:
        total += weighting.weigh(task_losses)[0]
    extra = {}
    for term in (t for t in terms if t.task is None):
        extra.update(term.values(y_true, y_pred))
    values.update(extra)
    if extra:
        total = total + tf.add_n(list(extra.values()))
    values["loss"] = total
    return values


class Term(keras.layers.Layer):
    """A term of the training loss (or one only logged beside it).

    Attributes:
        task: the task it belongs to, or ``None`` (a method's own term).
        weighted: a task loss, weighed with the task's other weighted terms
            by the trainer's weighting; else added as it is.
        in_loss: ``False`` for a term that is only logged.
        learning_rate: its own variables' learning rate (``None``: the
            optimizer's).
    """

    weighted = False
    in_loss = True

    def __init__(self, task=None, learning_rate=None, **kwargs):
        super().__init__(**kwargs)
        self.task = task
        self.learning_rate = learning_rate

    def names(self):
        """The names it logs, in the order :meth:`values` returns them."""
        raise NotImplementedError

    def build_for(self, outputs):
        """Creates its variables for the trainer's outputs (``{name: symbolic tensor}``).

        Called once when the trainer is made, so that every variable exists
        before the optimizer is built (none is created inside a traced step).
        """

    def values(self, y_true, y_pred):
        """``{name: value}`` for a batch: ``y_true`` the targets, ``y_pred`` the outputs."""
        raise NotImplementedError

    def get_config(self):
        return {**super().get_config(), "task": self.task, "learning_rate": self.learning_rate}


@keras.saving.register_keras_serializable(package=PACKAGE)
class TaskLoss(Term):
    """A branch's loss on its task (the task's own loss, ``tasks.py``)."""

    weighted = True

    def __init__(self, task, branch, ignore_label=-1, monitor_only=False, **kwargs):
        super().__init__(task, **kwargs)
        self.branch, self.ignore_label = branch, int(ignore_label)
        self.monitor_only = bool(monitor_only)
        if self.monitor_only:  # logged, no gradient (the ensemble objective's)
            self.weighted = self.in_loss = False
        self.loss = losses_lib.task_loss(task, ignore_label)

    def names(self):
        return [f"{self.task}_{self.branch}_loss"]

    def values(self, y_true, y_pred):
        value = self.loss(y_true[self.task], y_pred[output_name(self.task, self.branch)])
        return {self.names()[0]: tf.stop_gradient(value) if self.monitor_only else value}

    def get_config(self):
        return {**super().get_config(), "branch": self.branch,
                "ignore_label": self.ignore_label, "monitor_only": self.monitor_only}


@keras.saving.register_keras_serializable(package=PACKAGE)
class EnsembleTaskLoss(Term):
    """The task loss of the average of the Teacher's and Student's predictions (Eq. 6)."""

    weighted = True

    def __init__(self, task, ignore_label=-1, **kwargs):
        super().__init__(task, **kwargs)
        self.ignore_label = int(ignore_label)
        self.loss = losses_lib.task_loss(task, ignore_label)

    def names(self):
        return [f"{self.task}_ensemble_loss"]

    def values(self, y_true, y_pred):
        mean = average_prediction(self.task, y_pred[output_name(self.task, "teacher")],
                                  y_pred[output_name(self.task, "student")])
        return {self.names()[0]: self.loss(y_true[self.task], mean)}

    def get_config(self):
        return {**super().get_config(), "ignore_label": self.ignore_label}


def average_prediction(task, teacher, student):
    """The ensemble prediction of Eq. 6, in the task's output space.

    Segmentation: ``log((softmax(t) + softmax(s)) / 2)``, log-probabilities
    that the cross-entropy accepts in place of logits. Normals: the mean of
    the two unit vectors, renormalised. Other tasks: the mean.
    """
    teacher = tf.cast(teacher, tf.float32)
    student = tf.cast(student, tf.float32)
    if get_task(task).is_classification:
        both = tf.stack(
            [tf.nn.log_softmax(teacher, -1), tf.nn.log_softmax(student, -1)], 0
        )
        return tf.reduce_logsumexp(both, axis=0) - math.log(2.0)
    mean = 0.5 * (teacher + student)
    if get_task(task).activation == "l2_normalize":
        return tf.math.l2_normalize(mean, axis=-1)
    return mean


@keras.saving.register_keras_serializable(package=PACKAGE)
class OutputDistillation(Term):
    """``kd_weight`` times a distance from the Teacher's output to the Student's (Eq. 3-4).

    Args:
        task: the task whose two outputs are compared.
        distance: a callable ``distance(teacher, student)`` returning a
            scalar reduced over the global batch (``losses.py``: KL, l2,
            Cauchy-Schwarz, or one of your own).
        kd_weight: lambda (0 is Baseline-2: the term and its gradient are 0).
        detach_teacher: stop the gradient at the Teacher's output, so that
            the Student follows the Teacher and never the other way round.
    """

    def __init__(self, task, distance, kd_weight=1.0, detach_teacher=True, **kwargs):
        super().__init__(task, **kwargs)
        self.distance, self.kd_weight = distance, float(kd_weight)
        self.detach_teacher = bool(detach_teacher)

    def names(self):
        return [f"{self.task}_kd_loss"]

    def values(self, y_true, y_pred):
        teacher = y_pred[output_name(self.task, "teacher")]
        student = y_pred[output_name(self.task, "student")]
        if self.detach_teacher:
            teacher = tf.stop_gradient(teacher)
        return {self.names()[0]: self.kd_weight * self.distance(teacher, student)}

    def get_config(self):
        return {**super().get_config(), "kd_weight": self.kd_weight,
                "detach_teacher": self.detach_teacher,
                "distance": keras.saving.serialize_keras_object(self.distance)}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["distance"] = keras.saving.deserialize_keras_object(config["distance"])
        return cls(**config)


def _suffix(level):
    return "" if level == "last" else f"_{level}"


@keras.saving.register_keras_serializable(package=PACKAGE)
class FeatureDistillation(Term):
    """Li & Bilen's term (ECCV-W 2020, Eq. 3-5): ``weight * d(A(phi(x)), phi_t(x))``.

    The network's shared features ``phi(x)`` (output ``source``) go through
    this term's **adaptor** ``A`` (a 1x1 convolution without bias, as the
    authors') and are pulled towards the features of the task's frozen
    single-task expert (output ``target``), with ``d`` the distance of
    feature maps normalised over channels (``losses.FeatureDistance``). The
    adaptor trains with the network at its own learning rate (the authors'
    0.1) and weight decay (5e-4), and is discarded at export.
    """

    def __init__(self, task, level, source, target, channels, weight=1.0, bias=False,
                 weight_decay=0.0, **kwargs):
        kwargs.setdefault("name", f"{task}{_suffix(level)}_feature_distillation")
        super().__init__(None, **kwargs)
        self.expert_task, self.level = task, level
        self.source, self.target, self.channels = source, target, int(channels)
        self.weight, self.bias, self.weight_decay = float(weight), bool(bias), float(weight_decay)
        regularizer = (keras.regularizers.L2(weight_decay / 2) if weight_decay else None)
        self.adaptor = keras.layers.Conv2D(
            channels, 1, use_bias=bias, kernel_regularizer=regularizer,
            name=f"{task}{_suffix(level)}_adaptor")
        self.distance = losses_lib.FeatureDistance()

    def names(self):
        return [f"{self.expert_task}{_suffix(self.level)}_feature_loss"]

    def build_for(self, outputs):
        self.adaptor.build(outputs[self.source].shape)

    def values(self, y_true, y_pred):
        adapted = self.adaptor(y_pred[self.source])
        return {self.names()[0]: self.weight * self.distance(y_pred[self.target], adapted)}

    def get_config(self):
        config = super().get_config()
        config.pop("task")
        return {**config, "task": self.expert_task, "level": self.level,
                "source": self.source, "target": self.target, "channels": self.channels,
                "weight": self.weight, "bias": self.bias, "weight_decay": self.weight_decay}
