"""Recipes and plans: the typed schema, YAML loading, ``base:``, ``--set``. No TensorFlow.

``from keras_sdmtcnn.config import load_recipe`` is all a command needs to
check a recipe; nothing here imports TensorFlow, so a bad recipe is reported
at once.
"""

from keras_sdmtcnn.config.loading import (  # noqa: F401
    apply_overrides,
    load_recipe,
    parse_override,
    read_yaml_mapping,
    recipe_from_dict,
    recipe_to_dict,
    save_recipe,
)
from keras_sdmtcnn.config.plans import Plan, PlanRun, load_plan  # noqa: F401
from keras_sdmtcnn.config.schema import Recipe  # noqa: F401
