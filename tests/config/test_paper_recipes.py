"""Every recipe under recipes/paper/ validates and builds its model; every plan loads."""

import glob
import os

import pytest
from conftest import REPO

from keras_sdmtcnn.config import load_recipe, plans
from keras_sdmtcnn.training.builders import build_objective, network_config
from keras_sdmtcnn.training.methods import FeatureDistillation, SelfDistillation, TwoStage
from keras_sdmtcnn.training.trainer import MultiTaskTrainer

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
    key = repr((kind, sorted((k, repr(v)) for k, v in config.items()), extra))
    if key not in _BUILT:
        if kind == "stage1_network":
            method = TwoStage(config, config)
        elif kind == "experts":
            experts, weights = extra
            method = FeatureDistillation(config, {t: {**config, "tasks": [t]} for t in experts},
                                         dict(weights))
        else:
            method = SelfDistillation(config)
        _BUILT[key] = MultiTaskTrainer(method)
    return _BUILT[key]


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: os.path.relpath(p, PAPER))
def test_paper_recipe_validates_and_builds(path):
    folder = os.path.basename(os.path.dirname(path))
    recipe = load_recipe(path, ["data.root=/data"] if folder != "synthetic" else [])
    objective = recipe.objective
    build_objective(objective)
    # Built at 1/16 of the recipe's width so that ~90 models build in seconds;
    # every structural choice (tasks, decoder, attention, branches, the
    # method) is the recipe's.
    recipe.model.width_multiplier /= 16
    config = network_config(recipe, NUM_CLASSES[folder], -1)
    if objective.stage1_network is not None:
        model = build_once("stage1_network", config, None)
        assert not model.teacher_model().trainable
    elif objective.experts:
        assert set(objective.experts) == set(recipe.data.tasks)
        model = build_once("experts", config, (tuple(objective.experts),
                                               tuple(sorted(objective.feature_weights.items()))))
        assert [n for t in model.method_terms for n in t.names()] == [
            f"{t}_feature_loss" for t in recipe.data.tasks]
    else:
        model = build_once("sdmtcnn", config, None)
        assert model.method.network.config.decoder == recipe.model.decoder
        assert model.method.network.config.attention == recipe.model.attention
    assert list(model.tasks) == list(recipe.data.tasks)
    assert set(model.output_names) >= {f"{t}_teacher" for t in recipe.data.tasks}
    assert recipe.name == f"{folder}_{os.path.splitext(os.path.basename(path))[0]}"


@pytest.mark.parametrize("path", PLANS, ids=lambda p: os.path.relpath(p, PAPER))
def test_paper_plans_load(path):
    plan = plans.load_plan(path)
    assert plan.reference and all(r in [run.name for run in plan.runs]
                                  for r in plan.reference.values())
