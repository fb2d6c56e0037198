from pathlib import Path

import pytest
from conftest import REPO

from keras_sdmtcnn.config import load_recipe, recipe_from_dict
from keras_sdmtcnn.errors import UserError


def write(tmp_path, text):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    return str(path)


def test_yaml_overrides_defaults_and_set_overrides_yaml(tmp_path):
    path = write(tmp_path, "training:\n  epochs: 5\nmodel:\n  width_multiplier: 0.5\n")
    recipe = load_recipe(path, ["training.epochs=3", "objective.name=ensemble",
                                "data.image_size=[32, 64]"])
    assert recipe.name == "r"
    assert recipe.training.epochs == 3
    assert recipe.model.width_multiplier == 0.5
    assert recipe.objective.name == "ensemble"
    assert recipe.data.image_size == [32, 64]
    assert recipe.training.batch_size == 2  # a default


@pytest.mark.parametrize("values,match", [
    ({"training": {"epohcs": 3}}, r"Unknown recipe key training.epohcs. Did you mean training.epochs\?"),
    ({"trainig": {}}, r"Unknown recipe key trainig. Did you mean training\?"),
    ({"training": {"epochs": "ten"}}, r"training.epochs must be int, got 'ten'"),
    ({"training": {"learning_rate": True}}, r"training.learning_rate must be float"),
    ({"training": {"epochs": 0}}, r"training.epochs must be >= 1"),
    ({"objective": {"name": "seperate"}}, r"objective.name must be one of .* Did you mean 'separate'"),
    ({"data": {"tasks": ["depht"]}}, r"unknown task 'depht'. Did you mean 'depth'"),
    ({"data": {"tasks": []}}, r"data.tasks is empty"),
    ({"data": {"image_size": [30, 32]}}, r"data.image_size must be .* multiple of 16"),
    ({"data": {"format": "taskonomy"}}, r"data.root is required"),
    ({"objective": {"kd_weight": -1}}, r"objective.kd_weight must be >= 0"),
    ({"data": {"scenes": 3}}, r"data.scenes must be a mapping"),
    ({"data": {"val_source": "holdout"}}, r"data.val_source: holdout is for nyuv2 and cityscapes"),
    ({"data": {"format": "nyuv2", "root": "/d", "tasks": ["depth"], "val_source": "holdout",
               "holdout_fraction": 1.5}}, r"data.holdout_fraction must be in \(0, 1\)"),
    ({"data": {"format": "cityscapes", "root": "/d", "tasks": ["normal"]}},
     r"data.tasks has \['normal'\], which data.format: cityscapes does not provide"),
    ({"training": {"distribute": "mirored"}}, r"training.distribute must be one of .* Did you mean 'mirrored'"),
])
def test_bad_recipes_name_the_key(values, match):
    with pytest.raises(UserError, match=match):
        recipe_from_dict(values)


def test_bad_files_and_overrides(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_recipe(str(tmp_path / "none.yaml"))
    with pytest.raises(UserError, match="not valid YAML"):
        load_recipe(write(tmp_path, "training: [unclosed\n"))
    with pytest.raises(UserError, match="expects KEY=VALUE"):
        load_recipe(write(tmp_path, "{}\n"), ["training.epochs"])


def test_shipped_recipes_load():
    recipes = Path(REPO) / "recipes"
    for name in ("synthetic", "mini_taskonomy", "nyuv2", "nyuv2_2task", "cityscapes"):
        recipe = load_recipe(str(recipes / f"{name}.yaml"), ["data.root=/data/taskonomy"])
        assert recipe.name == name
