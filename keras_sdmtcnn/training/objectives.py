"""Training objectives: how task losses and distillation terms add up.

- ``separate`` (paper Eq. 5): every Teacher and Student task loss, plus
  ``kd_weight`` (the paper's lambda) times the distillation terms.
- ``ensemble`` (paper Eq. 6): each task loss is taken once, on the average
  of the Teacher and Student predictions (the mean of the softmax
  probabilities for segmentation, the mean output for regression, normals
  renormalised to unit length), plus lambda times the distillation terms.
- ``teacher_only``: the Teacher's task losses alone (vanilla SegNet, the
  paper's Baseline-1).

Task losses add up through a weighting (``weighting.py``): equal weights
(the paper), dynamic weight average or learned uncertainty; the
distillation terms are added unweighted. ``distillation="cauchy_schwarz"``
replaces the paper's KL/l2 terms by KDAM's Cauchy-Schwarz divergence.

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

from keras_sdmtcnn import PACKAGE
from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.tasks import get_task, output_name
from keras_sdmtcnn.training import losses as losses_lib


def _check_number(name, value):
    """An objective's numeric argument: a real number (not a string, not a bool), finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value!r} "
                        f"({type(value).__name__}).")


class Objective:
    """Base class of the objectives.

    Args:
        kd_weight: lambda of Eq. 5 and 6 (default 1).
        task_weights: optional ``{task: weight}`` for the task losses; missing
            tasks weigh 1 (the paper uses equal weights).
        detach_teacher: stop the distillation gradient at the Teacher's output.
        temperature: softmax temperature of the segmentation KL term (and of
            the Cauchy-Schwarz term).
        regression_kd: reading of Eq. 4: ``"mse"`` or ``"euclidean"``.
        distillation: ``"paper"`` (KL for segmentation, l2 for regression,
            Eq. 3-4) or ``"cauchy_schwarz"`` (KDAM Eq. 4-7 for every task).
        weighting: how task losses add up: ``"equal"`` (the paper), ``"dwa"``
            or ``"uncertainty"`` (``weighting.py``); the model that compiles
            the objective owns the weighting's state.
        dwa_temperature: T of dynamic weight average (2, as MTAN).
    """

    name = None
    uses_student = True
    DISTILLATIONS = ("paper", "cauchy_schwarz")

    def __init__(self, kd_weight=1.0, task_weights=None, detach_teacher=True,
                 temperature=1.0, regression_kd="mse", distillation="paper",
                 weighting="equal", dwa_temperature=2.0):
        from keras_sdmtcnn.training.weighting import WEIGHTINGS

        for name, value in (("kd_weight", kd_weight), ("temperature", temperature),
                            ("dwa_temperature", dwa_temperature),
                            *((f"task_weights[{t!r}]", w)
                              for t, w in dict(task_weights or {}).items())):
            _check_number(name, value)
        if not isinstance(detach_teacher, bool):
            raise UserError(f"detach_teacher must be True or False, got {detach_teacher!r}.")
        if kd_weight < 0:
            raise ValueError(f"kd_weight (lambda) must be >= 0, got {kd_weight}.")
        if distillation not in self.DISTILLATIONS:
            raise ValueError(
                f"distillation must be one of {self.DISTILLATIONS}, got {distillation!r}.")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {tuple(WEIGHTINGS)}, got {weighting!r}.")
        self.kd_weight = float(kd_weight)
        self.task_weights = dict(task_weights or {})
        self.detach_teacher = bool(detach_teacher)
        self.temperature = float(temperature)
        self.regression_kd = regression_kd
        self.distillation_name = distillation
        self.weighting = weighting
        self.dwa_temperature = float(dwa_temperature)
        # Validate now, not inside a traced step.
        losses_lib.KLDistillation(self.temperature)
        losses_lib.L2Distillation(self.regression_kd)

    def make_weighting(self, tasks):
        """The weighting layer for ``tasks`` (built by the model that compiles this)."""
        from keras_sdmtcnn.training.weighting import get_weighting

        kwargs = {"temperature": self.dwa_temperature} if self.weighting == "dwa" else {}
        return get_weighting(self.weighting, tasks, **kwargs)

    def task_loss(self, task, ignore_label=-1):
        return losses_lib.task_loss(task, ignore_label)

    def distillation(self, task):
        """The task's distillation term: its spec's (the paper's), or Cauchy-Schwarz."""
        spec = get_task(task)
        if self.distillation_name == "cauchy_schwarz":
            kind = "logits" if spec.is_classification else "regression"
            return losses_lib.CauchySchwarzDistillation(kind, self.temperature)
        options = {"kl": {"temperature": self.temperature},
                   "l2": {"reduction": self.regression_kd}}
        return losses_lib.get_loss(spec.distillation, **options[spec.distillation])

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

    def weighted_terms(self, task):
        """The logged terms whose sum is the task loss that the weighting weighs."""
        return [f"{task}_teacher_loss"]

    def _kd_terms(self, y_pred, task):
        teacher = y_pred[output_name(task, "teacher")]
        student = y_pred[output_name(task, "student")]
        if self.detach_teacher:
            teacher = tf.stop_gradient(teacher)
        return self.kd_weight * self.distillation(task)(teacher, student)

    def _task_terms(self, task, y_true, y_pred, loss):
        """``(logged terms, this task's loss before weighting, its distillation)``."""
        raise NotImplementedError

    def __call__(self, y_true, y_pred, tasks, ignore_label=-1, weighting=None):
        """The terms of the objective; ``weighting`` defaults to equal weights."""
        terms, task_losses, total = {}, {}, 0.0
        for task in tasks:
            logged, task_loss, kd = self._task_terms(
                task, y_true, y_pred, self.task_loss(task, ignore_label))
            terms.update(logged)
            task_losses[task] = self.weight(task) * task_loss
            if kd is not None:
                total += kd
        if weighting is None:
            total += tf.add_n(list(task_losses.values()))
        else:
            total += weighting.weigh(task_losses)[0]
        terms["loss"] = total
        return terms

    def get_config(self):
        return {
            "kd_weight": self.kd_weight,
            "task_weights": self.task_weights,
            "detach_teacher": self.detach_teacher,
            "temperature": self.temperature,
            "regression_kd": self.regression_kd,
            "distillation": self.distillation_name,
            "weighting": self.weighting,
            "dwa_temperature": self.dwa_temperature,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SeparateObjective(Objective):
    """Paper Eq. 5: Teacher and Student task losses + lambda * distillation."""

    name = "separate"

    def weighted_terms(self, task):
        return [f"{task}_teacher_loss", f"{task}_student_loss"]

    def _task_terms(self, task, y_true, y_pred, loss):
        terms = {}
        for branch in ("teacher", "student"):
            terms[f"{task}_{branch}_loss"] = loss(
                y_true[task], y_pred[output_name(task, branch)])
        terms[f"{task}_kd_loss"] = self._kd_terms(y_pred, task)
        task_loss = terms[f"{task}_teacher_loss"] + terms[f"{task}_student_loss"]
        return terms, task_loss, terms[f"{task}_kd_loss"]


@keras.saving.register_keras_serializable(package=PACKAGE)
class EnsembleObjective(Objective):
    """Paper Eq. 6: task losses of the averaged prediction + lambda * distillation."""

    name = "ensemble"

    def weighted_terms(self, task):
        return [f"{task}_ensemble_loss"]

    def _task_terms(self, task, y_true, y_pred, loss):
        terms = {}
        teacher = y_pred[output_name(task, "teacher")]
        student = y_pred[output_name(task, "student")]
        for branch, pred in (("teacher", teacher), ("student", student)):
            terms[f"{task}_{branch}_loss"] = tf.stop_gradient(loss(y_true[task], pred))
        value = loss(y_true[task], average_prediction(task, teacher, student))
        terms[f"{task}_ensemble_loss"] = value
        terms[f"{task}_kd_loss"] = self._kd_terms(y_pred, task)
        return terms, value, terms[f"{task}_kd_loss"]


@keras.saving.register_keras_serializable(package=PACKAGE)
class TeacherOnlyObjective(Objective):
    """The Teacher's task losses alone (vanilla SegNet, Baseline-1)."""

    name = "teacher_only"
    uses_student = False

    def _task_terms(self, task, y_true, y_pred, loss):
        value = loss(y_true[task], y_pred[output_name(task, "teacher")])
        return {f"{task}_teacher_loss": value}, value, None


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
