"""Every recipe under recipes/paper/ validates and builds its model; every plan loads."""

import glob
import os

import pytest
from conftest import REPO

from keras_sdmtcnn.config import load_recipe, plans
from keras_sdmtcnn.models.builders import build_objective, model_config
from keras_sdmtcnn.models.distillation import FeatureDistillationModel, FrozenTeacherStudent
from keras_sdmtcnn.models.sdmtcnn import SDMTCNN

PAPER = os.path.join(REPO, "recipes", "paper")
RECIPES = sorted(p for p in glob.glob(os.path.join(PAPER, "*", "*.yaml"))
                 if not p.endswith("plan.yaml"))
PLANS = sorted(glob.glob(os.path.join(PAPER, "*", "*plan.yaml")))
NUM_CLASSES = {"nyuv2": 13, "nyuv2_2task": 13, "cityscapes": 7, "mini_taskonomy": 18,
               "synthetic": 7}

def test_every_table_row_has_a_recipe():
    names = {os.path.relpath(p, PAPER) for p in RECIPES}
    for folder in ("nyuv2", "nyuv2_2task", "cityscapes", "mini_taskonomy"):
        for row in ("baseline1_vanilla_segnet", "baseline2_separate", "baseline2_ensemble",
                    "baseline3_traditional_kd", "baseline4_separate", "baseline4_ensemble",
                    "sdmtcnn_separate", "sdmtcnn_ensemble", "single_semantic", "single_depth",
                    "li_bilen", "kdam"):
            assert f"{folder}/{row}.yaml" in names
    for row in ("sd_single_semantic_separate", "sd_single_semantic_ensemble",
                "sd_single_depth_separate", "sd_single_depth_ensemble", "unet",
                "unet_separate", "unet_ensemble", "single_normal"):
        assert f"nyuv2/{row}.yaml" in names
    for row in ("unet", "unet_separate", "unet_ensemble", "single_keypoints", "single_edges"):
        assert f"mini_taskonomy/{row}.yaml" in names

_BUILT = {}

def build_once(kind, config, extra):
    """Recipes that share an architecture share one build (the suite stays fast)."""
    key = repr((kind, sorted(config.items()), extra))
    if key not in _BUILT:
        if kind == "frozen_teacher":
            _BUILT[key] = FrozenTeacherStudent(config, config)
        elif kind == "feature":
            teachers, weights = extra
            _BUILT[key] = FeatureDistillationModel(
                config, {t: {**config, "tasks": [t]} for t in teachers}, dict(weights))
        else:
            _BUILT[key] = SDMTCNN(**config)
    return _BUILT[key]

@pytest.mark.parametrize("path", RECIPES, ids=lambda p: os.path.relpath(p, PAPER))
def test_paper_recipe_validates_and_builds(path):
    folder = os.path.basename(os.path.dirname(path))
    recipe = load_recipe(path, ["data.root=/data"] if folder != "synthetic" else [])
    objective = recipe.objective
    build_objective(objective)
    # Built at 1/16 of the recipe's width so that ~90 models build in seconds;
    # every structural choice (tasks, decoder, attention, branches, the
    # distillation wrapper) is the recipe's.
    recipe.model.width_multiplier /= 16
    config = model_config(recipe, NUM_CLASSES[folder], -1)
    if objective.frozen_teacher is not None:
        model = build_once("frozen_teacher", config, None)
        assert not model.teacher_model().trainable
    elif objective.feature_teachers:
        assert set(objective.feature_teachers) == set(recipe.data.tasks)
        model = build_once("feature", config, (tuple(objective.feature_teachers),
                                                tuple(sorted(objective.feature_weights.items()))))
        assert model.extra_term_names() == [f"{t}_feature_loss" for t in recipe.data.tasks]
    else:
        model = build_once("sdmtcnn", config, None)
        assert model.decoder == recipe.model.decoder
        assert model.attention == recipe.model.attention
    assert list(model.tasks) == list(recipe.data.tasks)
    assert set(model.output_names) >= {f"{t}_teacher" for t in recipe.data.tasks}
    assert recipe.name == f"{folder}_{os.path.splitext(os.path.basename(path))[0]}"

@pytest.mark.parametrize("path", PLANS, ids=lambda p: os.path.relpath(p, PAPER))
def test_paper_plans_load(path):
    plan = plans.load_plan(path)
    assert plan.reference and all(r in [run.name for run in plan.runs]
                                  for r in plan.reference.values())
