"""Recipes are checked field by field before anything is built: bad ones raise UserError only.

A property-based test (hypothesis) throws random documents at the schema:
random and misspelt keys, wrong types, nesting, NaN and Inf, empty lists
and empty mappings. Each either loads with every value in range or raises
the project's error type; nothing else may escape.
"""

import dataclasses
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keras_sdmtcnn.config import load_recipe, recipe_from_dict, schema
from keras_sdmtcnn.errors import UserError

SECTIONS = {f.name: f.type for f in dataclasses.fields(schema.Recipe)}


def _keys(cls):
    names = [f.name for f in dataclasses.fields(cls)]
    return names + [n[:-1] for n in names] + [n + "s" for n in names[:3]]


SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 2**40),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
    st.sampled_from(["semantic", "depth", "normal", "separate", "nyuv2", "scenes", "imagenet",
                     "holdout", "adamw", "mirrored", "val_loss", "label_19"]),
)
VALUES = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["semantic", "depth", "x"]), inner, max_size=2),
    max_leaves=5)


def _section(cls):
    nested = {f.name: f.type for f in dataclasses.fields(cls)
              if dataclasses.is_dataclass(f.type)}
    entries = {key: (_section(nested[key]) if key in nested else VALUES)
               for key in _keys(cls)}
    return st.fixed_dictionaries({}, optional=entries) | VALUES


DOCUMENTS = st.fixed_dictionaries({}, optional={
    **{name: _section(cls) if dataclasses.is_dataclass(cls) else VALUES
       for name, cls in SECTIONS.items()},
    "trainig": VALUES, "base": VALUES,
})


def _in_range(recipe):
    """Every value of a loaded recipe is of its type and in its range."""
    for section in dataclasses.fields(recipe):
        part = getattr(recipe, section.name)
        if not dataclasses.is_dataclass(part):
            continue
        for f in dataclasses.fields(part):
            value = getattr(part, f.name)
            if isinstance(value, float):
                assert math.isfinite(value), (section.name, f.name, value)
            if isinstance(value, list):
                assert value, (section.name, f.name)
    assert recipe.training.epochs >= 1 and recipe.training.batch_size >= 1
    assert 0 <= recipe.training.seed <= schema.MAX_SEED
    assert recipe.training.learning_rate > 0 and recipe.model.width_multiplier > 0
    assert all(isinstance(v, int) and v >= 1 for v in recipe.model.encoder_filters)
    assert len(recipe.data.image_size) == 2 and recipe.data.tasks
    threads = recipe.speed.intra_op_threads
    assert threads is None or (type(threads) is int and threads >= 0)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENTS)
def test_random_documents_load_in_range_or_raise_user_error(document):
    try:
        recipe = recipe_from_dict(document)
    except UserError:
        return
    _in_range(recipe)


@pytest.mark.parametrize("values,match", [
    ({"training": {"learning_rate": float("nan")}}, r"training.learning_rate must be a finite"),
    ({"objective": {"kd_weight": float("inf")}}, r"objective.kd_weight must be a finite"),
    ({"data": {"train_split": []}}, r"data.train_split is an empty list"),
    ({"model": {"encoder_filters": []}}, r"model.encoder_filters is an empty list"),
    ({"model": {"encoder_filters": [64, "a", 256, 512]}}, r"model.encoder_filters must be"),
    ({"model": {"student_filters": [64, 0, 32, 16]}}, r"model.student_filters must be"),
    ({"training": {"seed": 2**40}}, r"training.seed must be an integer from 0 to"),
    ({"training": {"seed": -1}}, r"training.seed must be an integer from 0 to"),
    ({"objective": {"task_weights": {"depth": "heavy"}}},
     r"objective.task_weights.depth must be a finite number"),
    ({"data": {"format": "taskonomy", "root": "/d", "train_split": ["b1", 3]}},
     r"data.train_split must be a list of names"),
    ({"speed": {"intra_op_threads": -1}}, r"speed.intra_op_threads must be an integer >= 0"),
    ({"speed": {"intra_op_threads": True}}, r"speed.intra_op_threads"),
])
def test_values_out_of_range_name_the_key(values, match):
    with pytest.raises(UserError, match=match):
        recipe_from_dict(values)


def test_bad_recipe_files_name_the_file(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing but a comment\n")
    with pytest.raises(UserError, match=f"{empty} is empty"):
        load_recipe(str(empty))
    twice = tmp_path / "twice.yaml"
    twice.write_text("training:\n  epochs: 3\n  epochs: 5\n")
    with pytest.raises(UserError, match="the key 'epochs' appears twice"):
        load_recipe(str(twice))
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(UserError, match=f"{latin} is not UTF-8 text"):
        load_recipe(str(latin))
    with pytest.raises(UserError, match="is a folder"):
        load_recipe(str(tmp_path))
    afile = tmp_path / "root.txt"
    afile.write_text("x")
    with pytest.raises(UserError, match=r"data.root is .*root.txt, which is a file"):
        recipe_from_dict({"data": {"format": "nyuv2", "root": str(afile),
                                   "tasks": ["depth"]}})
    good = tmp_path / "good.yaml"
    good.write_text("training: {epochs: 1}\n")
    with pytest.raises(UserError, match="appears twice"):
        load_recipe(str(good), ["training={epochs: 1, epochs: 2}"])
