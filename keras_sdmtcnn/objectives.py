"""Training objectives: how task losses and distillation terms add up.

- ``separate`` (paper Eq. 5): every Teacher and Student task loss, plus
  ``kd_weight`` (the paper's lambda) times the distillation terms.
- ``ensemble`` (paper Eq. 6): each task loss is taken once, on the average
  of the Teacher and Student predictions (the mean of the softmax
  probabilities for segmentation, the mean output for regression, normals
  renormalised to unit length), plus lambda times the distillation terms.
- ``teacher_only``: the Teacher's task losses alone (vanilla SegNet, the
  paper's Baseline-1).

``kd_weight=0`` is Baseline-2: distillation terms (and their gradients) are
zero. By default the Teacher side of a distillation term is detached
(``stop_gradient``): the Student follows the Teacher, and distillation never
moves Teacher-only weights; ``detach_teacher=False`` lets the gradient through.

Calling an objective returns a dict of terms, each already reduced over the
global batch (see ``losses.global_mean``): ``loss`` (what is minimised) and,
per task, ``{task}_teacher_loss``, ``{task}_student_loss``,
``{task}_kd_loss`` (lambda times the distillation term, as it enters
``loss``) and, for ``ensemble``, ``{task}_ensemble_loss``. In ``ensemble``
the separate Teacher and Student losses are reported for monitoring only.
"""

import math

import keras
import tensorflow as tf

from keras_sdmtcnn import losses as losses_lib
from keras_sdmtcnn.layers import PACKAGE
from keras_sdmtcnn.tasks import get_task, output_name


class Objective:
    """Base class of the objectives.

    Args:
        kd_weight: lambda of Eq. 5 and 6 (default 1).
        task_weights: optional ``{task: weight}`` for the task losses; missing
            tasks weigh 1 (the paper uses equal weights).
        detach_teacher: stop the distillation gradient at the Teacher's output.
        temperature: softmax temperature of the segmentation KL term.
        regression_kd: reading of Eq. 4: ``"mse"`` or ``"euclidean"``.
    """

    name = None
    uses_student = True

    def __init__(self, kd_weight=1.0, task_weights=None, detach_teacher=True,
                 temperature=1.0, regression_kd="mse"):
        if kd_weight < 0:
            raise ValueError(f"kd_weight (lambda) must be >= 0, got {kd_weight}.")
        self.kd_weight = float(kd_weight)
        self.task_weights = dict(task_weights or {})
        self.detach_teacher = bool(detach_teacher)
        self.temperature = float(temperature)
        self.regression_kd = regression_kd
        # Validate now, not inside a traced step.
        losses_lib.KLDistillation(self.temperature)
        losses_lib.L2Distillation(self.regression_kd)

    def task_loss(self, task, ignore_label=-1):
        spec = get_task(task)
        if spec.task_loss == "cross_entropy":
            return losses_lib.CrossEntropy(ignore_label)
        return losses_lib.get_loss(spec.task_loss)

    def distillation(self, task):
        spec = get_task(task)
        if spec.distillation == "kl":
            return losses_lib.KLDistillation(self.temperature)
        return losses_lib.L2Distillation(self.regression_kd)

    def weight(self, task):
        return float(self.task_weights.get(task, 1.0))

    def term_names(self, tasks):
        """Names of the terms this objective returns for ``tasks``, ``loss`` first."""
        names = ["loss"]
        for task in tasks:
            names += [f"{task}_teacher_loss"]
            if self.uses_student:
                names += [f"{task}_student_loss", f"{task}_kd_loss"]
            if self.name == "ensemble":
                names += [f"{task}_ensemble_loss"]
        return names

    def _kd_terms(self, y_pred, task):
        teacher = y_pred[output_name(task, "teacher")]
        student = y_pred[output_name(task, "student")]
        if self.detach_teacher:
            teacher = tf.stop_gradient(teacher)
        return self.kd_weight * self.distillation(task)(teacher, student)

    def __call__(self, y_true, y_pred, tasks, ignore_label=-1):
        raise NotImplementedError

    def get_config(self):
        return {
            "kd_weight": self.kd_weight,
            "task_weights": self.task_weights,
            "detach_teacher": self.detach_teacher,
            "temperature": self.temperature,
            "regression_kd": self.regression_kd,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SeparateObjective(Objective):
    """Paper Eq. 5: Teacher and Student task losses + lambda * distillation."""

    name = "separate"

    def __call__(self, y_true, y_pred, tasks, ignore_label=-1):
        terms, total = {}, 0.0
        for task in tasks:
            loss = self.task_loss(task, ignore_label)
            w = self.weight(task)
            for branch in ("teacher", "student"):
                value = loss(y_true[task], y_pred[output_name(task, branch)])
                terms[f"{task}_{branch}_loss"] = value
                total += w * value
            terms[f"{task}_kd_loss"] = self._kd_terms(y_pred, task)
            total += terms[f"{task}_kd_loss"]
        terms["loss"] = total
        return terms


@keras.saving.register_keras_serializable(package=PACKAGE)
class EnsembleObjective(Objective):
    """Paper Eq. 6: task losses of the averaged prediction + lambda * distillation."""

    name = "ensemble"

    def __call__(self, y_true, y_pred, tasks, ignore_label=-1):
        terms, total = {}, 0.0
        for task in tasks:
            loss = self.task_loss(task, ignore_label)
            teacher = y_pred[output_name(task, "teacher")]
            student = y_pred[output_name(task, "student")]
            for branch, pred in (("teacher", teacher), ("student", student)):
                terms[f"{task}_{branch}_loss"] = tf.stop_gradient(
                    loss(y_true[task], pred)
                )
            value = loss(y_true[task], average_prediction(task, teacher, student))
            terms[f"{task}_ensemble_loss"] = value
            terms[f"{task}_kd_loss"] = self._kd_terms(y_pred, task)
            total += self.weight(task) * value + terms[f"{task}_kd_loss"]
        terms["loss"] = total
        return terms


@keras.saving.register_keras_serializable(package=PACKAGE)
class TeacherOnlyObjective(Objective):
    """The Teacher's task losses alone (vanilla SegNet, Baseline-1)."""

    name = "teacher_only"
    uses_student = False

    def __call__(self, y_true, y_pred, tasks, ignore_label=-1):
        terms, total = {}, 0.0
        for task in tasks:
            value = self.task_loss(task, ignore_label)(
                y_true[task], y_pred[output_name(task, "teacher")]
            )
            terms[f"{task}_teacher_loss"] = value
            total += self.weight(task) * value
        terms["loss"] = total
        return terms


def average_prediction(task, teacher, student):
    """The ensemble prediction of Eq. 6, in the task's output space.

    Segmentation: ``log((softmax(t) + softmax(s)) / 2)``, log-probabilities
    that the cross-entropy accepts in place of logits. Normals: the mean of
    the two unit vectors, renormalised. Other tasks: the mean.
    """
    teacher = tf.cast(teacher, tf.float32)
    student = tf.cast(student, tf.float32)
    if get_task(task).activation == "logits":
        both = tf.stack(
            [tf.nn.log_softmax(teacher, -1), tf.nn.log_softmax(student, -1)], 0
        )
        return tf.reduce_logsumexp(both, axis=0) - math.log(2.0)
    mean = 0.5 * (teacher + student)
    if get_task(task).activation == "l2_normalize":
        return tf.math.l2_normalize(mean, axis=-1)
    return mean


OBJECTIVES = {
    cls.name: cls for cls in (SeparateObjective, EnsembleObjective, TeacherOnlyObjective)
}


def get_objective(name, **kwargs):
    """Builds the objective registered as ``name`` (see ``OBJECTIVES``)."""
    if name not in OBJECTIVES:
        raise ValueError(
            f"Unknown objective {name!r}; allowed: {', '.join(OBJECTIVES)}."
        )
    return OBJECTIVES[name](**kwargs)
