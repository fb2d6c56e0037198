"""The names a recipe may choose, and the class each one names: the one registry of each.

Recipes are checked before TensorFlow loads (``config/``), so the tables
name their classes as ``"module:Class"`` and :func:`resolve` imports one
when it is built. A test checks that every class declares the name it is
registered under. A new objective, weighting or output-distillation loss is
one class and one entry here.
"""

import importlib

# objective.name: how the task and distillation terms add up (training/objectives.py).
OBJECTIVES = {
    "separate": "keras_sdmtcnn.training.objectives:SeparateObjective",
    "ensemble": "keras_sdmtcnn.training.objectives:EnsembleObjective",
    "teacher_only": "keras_sdmtcnn.training.objectives:TeacherOnlyObjective",
}

# objective.weighting: how task losses are weighed (training/weighting.py).
WEIGHTINGS = {
    "equal": "keras_sdmtcnn.training.weighting:EqualWeighting",
    "dwa": "keras_sdmtcnn.training.weighting:DynamicWeightAverage",
    "uncertainty": "keras_sdmtcnn.training.weighting:UncertaintyWeighting",
}

# objective.distillation: the output-distillation distance of every task
# (``paper``: each task's own, KL or l2, as its TaskSpec says; training/losses.py).
DISTILLATIONS = {
    "paper": None,
    "cauchy_schwarz": "keras_sdmtcnn.training.losses:CauchySchwarzDistillation",
}

# objective.feature_levels: where Li & Bilen's feature distillation reads features.
FEATURE_LEVELS = ("middle", "last")


def resolve(table, name, what):
    """The class ``table[name]`` names (imported now); an unknown name is a ``ValueError``."""
    if name not in table:
        raise ValueError(f"Unknown {what} {name!r}; allowed: {', '.join(table)}.")
    module, _, attribute = table[name].partition(":")
    return getattr(importlib.import_module(module), attribute)
