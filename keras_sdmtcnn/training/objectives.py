"""Training objectives: which loss terms a method's trainer adds up, and how.

- ``separate`` (paper Eq. 5): every Teacher and Student task loss, plus
  ``kd_weight`` (the paper's lambda) times the distillation terms.
- ``ensemble`` (paper Eq. 6): each task loss is taken once, on the average
  of the Teacher and Student predictions (the mean of the softmax
  probabilities for segmentation, the mean output for regression, normals
  renormalised), plus lambda times the distillation terms; the separate
  Teacher and Student losses are logged for monitoring only.
- ``teacher_only``: the Teacher's task losses alone (vanilla SegNet, the
  paper's Baseline-1).

An objective is a small serialisable object whose :meth:`Objective.terms`
gives the term objects (``terms.py``) for a list of tasks. Task losses add
up through a weighting (``weighting.py``): equal weights (the paper),
dynamic weight average or learned uncertainty; the distillation terms are
added unweighted. ``distillation="cauchy_schwarz"`` replaces the paper's
KL/l2 distances by KDAM's Cauchy-Schwarz divergence.

``kd_weight=0`` is Baseline-2: distillation terms (and their gradients) are
zero. By default the Teacher side of a distillation term is detached
(``stop_gradient``): the Student follows the Teacher, and distillation never
moves Teacher-only weights; ``detach_teacher=False`` lets the gradient through.
"""

import math

import keras

from keras_sdmtcnn import PACKAGE, registry
from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.tasks import get_task
from keras_sdmtcnn.training import losses as losses_lib
from keras_sdmtcnn.training.terms import (
    EnsembleTaskLoss,
    OutputDistillation,
    TaskLoss,
    add_up,
)


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
            or ``"uncertainty"`` (``weighting.py``); the trainer that
            compiles the objective owns the weighting's state.
        dwa_temperature: T of dynamic weight average (2, as MTAN).
    """

    name = None

    def __init__(self, kd_weight=1.0, task_weights=None, detach_teacher=True,
                 temperature=1.0, regression_kd="mse", distillation="paper",
                 weighting="equal", dwa_temperature=2.0):
        from keras_sdmtcnn.config.schema import ObjectiveConfig

        for name, value in (("kd_weight", kd_weight), ("temperature", temperature),
                            ("dwa_temperature", dwa_temperature),
                            *((f"task_weights[{t!r}]", w)
                              for t, w in dict(task_weights or {}).items())):
            _check_number(name, value)
        if not isinstance(detach_teacher, bool):
            raise UserError(f"detach_teacher must be True or False, got {detach_teacher!r}.")
        self.kd_weight = float(kd_weight)
        self.task_weights = dict(task_weights or {})
        self.detach_teacher = detach_teacher
        self.temperature = float(temperature)
        self.regression_kd = regression_kd
        self.distillation_name = distillation
        self.weighting = weighting
        self.dwa_temperature = float(dwa_temperature)
        # The recipe's rules, written once (config/schema.py).
        ObjectiveConfig(name=self.name, kd_weight=self.kd_weight,
                        task_weights=self.task_weights, temperature=self.temperature,
                        regression_kd=regression_kd, distillation=distillation,
                        weighting=weighting,
                        dwa_temperature=self.dwa_temperature).check_terms()

    def make_weighting(self, tasks):
        """The weighting layer for ``tasks`` (built by the trainer that compiles this)."""
        from keras_sdmtcnn.training.weighting import get_weighting

        kwargs = {"temperature": self.dwa_temperature} if self.weighting == "dwa" else {}
        return get_weighting(self.weighting, tasks, **kwargs)

    def distance(self, task):
        """The task's distillation distance: its spec's (the paper's), or Cauchy-Schwarz."""
        spec = get_task(task)
        if self.distillation_name != "paper":
            kind = "logits" if spec.is_classification else "regression"
            cls = registry.resolve(registry.DISTILLATIONS, self.distillation_name,
                                   "distillation")
            return cls(kind, self.temperature)
        options = {"kl": {"temperature": self.temperature},
                   "l2": {"reduction": self.regression_kd}}
        return losses_lib.get_loss(spec.distillation, **options[spec.distillation])

    def weight(self, task):
        return float(self.task_weights.get(task, 1.0))

    def distillation_term(self, task):
        return OutputDistillation(task, self.distance(task), self.kd_weight,
                                  self.detach_teacher, name=f"{task}_kd")

    def task_terms(self, task, ignore_label):
        """The terms of one task, in the order they are computed."""
        raise NotImplementedError

    def terms(self, tasks, ignore_label=-1):
        """The term objects of ``tasks``, task by task."""
        return [term for task in tasks for term in self.task_terms(task, ignore_label)]

    def __call__(self, y_true, y_pred, tasks, ignore_label=-1, weighting=None):
        """The terms' values and ``loss`` on a batch (as a trainer adds them up)."""
        return add_up(self.terms(tasks, ignore_label), tasks, y_true, y_pred, weighting,
                      self.weight)

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

    def task_terms(self, task, ignore_label):
        return [TaskLoss(task, "teacher", ignore_label, name=f"{task}_teacher_task"),
                TaskLoss(task, "student", ignore_label, name=f"{task}_student_task"),
                self.distillation_term(task)]


@keras.saving.register_keras_serializable(package=PACKAGE)
class EnsembleObjective(Objective):
    """Paper Eq. 6: task losses of the averaged prediction + lambda * distillation."""

    name = "ensemble"

    def task_terms(self, task, ignore_label):
        return [TaskLoss(task, "teacher", ignore_label, monitor_only=True,
                         name=f"{task}_teacher_task"),
                TaskLoss(task, "student", ignore_label, monitor_only=True,
                         name=f"{task}_student_task"),
                EnsembleTaskLoss(task, ignore_label, name=f"{task}_ensemble_task"),
                self.distillation_term(task)]


@keras.saving.register_keras_serializable(package=PACKAGE)
class TeacherOnlyObjective(Objective):
    """The Teacher's task losses alone (vanilla SegNet, Baseline-1)."""

    name = "teacher_only"

    def task_terms(self, task, ignore_label):
        return [TaskLoss(task, "teacher", ignore_label, name=f"{task}_teacher_task")]


def get_objective(name, **kwargs):
    """Builds the objective registered as ``name`` (``registry.OBJECTIVES``)."""
    return registry.resolve(registry.OBJECTIVES, name, "objective")(**kwargs)
