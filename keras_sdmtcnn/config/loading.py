"""Reading recipes: YAML files, ``base:`` inheritance, ``--set`` overrides, saving.

A recipe may start from another with ``base: OTHER.yaml`` (a path relative
to the recipe): its sections are merged key by key, the recipe's own values
winning (``recipes/paper/`` is written that way). ``--set KEY=VALUE``
overrides are applied last, each value parsed as YAML. The result is checked
by the schema (``schema.py``) before anything else runs.
"""

import dataclasses
import os

import yaml

from keras_sdmtcnn.config.schema import Recipe, build, validate
from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.io import atomic_write_text

# Mappings whose keys are tasks: a child recipe replaces them whole.
_REPLACED_WHOLE = ("task_weights", "experts", "feature_weights")


def recipe_from_dict(values):
    """Builds and validates a :class:`Recipe` from a (possibly partial) mapping."""
    recipe = build(Recipe, values or {}, "")
    validate(recipe)
    return recipe


def recipe_to_dict(recipe):
    return dataclasses.asdict(recipe)


def _set_path(values, path, value):
    keys = path.split(".")
    node = values
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {path}: {key} is not a section.")
    node[keys[-1]] = value


def parse_override(text):
    """``"training.epochs=3"`` -> ``("training.epochs", 3)`` (value parsed as YAML)."""
    if "=" not in text:
        raise UserError(f"--set expects KEY=VALUE (e.g. training.epochs=3), got {text!r}.")
    key, raw = text.split("=", 1)
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise UserError(f"--set {key}: cannot parse {raw!r} as a value ({e}).") from None
    return key.strip(), value


def apply_overrides(values, overrides):
    """Applies ``--set KEY=VALUE`` strings to a (nested) recipe mapping in place."""
    for text in overrides:
        _set_path(values, *parse_override(text))
    return values


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader, except that a key repeated in one mapping is an error.

    Written by hand because PyYAML has no strict mode: its loaders keep the
    last value of a repeated key without a word, so a recipe that sets
    ``training.epochs`` twice would silently train with the second.
    """


def _unique_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            repeated = key in seen
            seen.add(key)
        except TypeError:  # an unhashable key: the mapping constructor reports it
            break
        if repeated:
            raise yaml.constructor.ConstructorError(
                None, None, f"the key {key!r} appears twice in one mapping",
                key_node.start_mark)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_yaml(text):
    """Parses YAML text; a key repeated in one mapping is an error (``yaml.YAMLError``)."""
    return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader subclass)


def read_yaml_mapping(path, what):
    """The mapping in a YAML file, or a :class:`UserError` naming the file.

    The file must exist, be UTF-8 text, parse as YAML without repeated keys,
    and hold a non-empty mapping.
    """
    if os.path.isdir(path):
        raise UserError(f"{what} {path} is a folder: give the path of a YAML file.")
    if not os.path.isfile(path):
        raise UserError(f"{what} file {path} does not exist.")
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {path} is not UTF-8 text ({e.reason} at byte {e.start}): "
                        "save it as UTF-8.") from None
    except OSError as e:
        raise UserError(f"{what} {path} cannot be read: {e.strerror}.") from None
    try:
        values = load_yaml(text)
    except yaml.YAMLError as e:
        raise UserError(f"{what} {path} is not valid YAML: {e}") from None
    if values is None:
        raise UserError(f"{what} {path} is empty: write at least one key (the defaults are "
                        "documented in docs/recipes.md).")
    if not isinstance(values, dict):
        raise UserError(f"{what} {path} must be a mapping of keys, got {type(values).__name__}.")
    return values


def load_recipe(path, overrides=()):
    """Loads a YAML recipe, applies ``--set`` overrides and validates it.

    The recipe's ``name`` defaults to the file's stem.
    """
    values = read_yaml_mapping(path, "Recipe")
    values = _with_base(values, path, seen=(os.path.abspath(path),))
    values.setdefault("name", os.path.splitext(os.path.basename(path))[0])
    apply_overrides(values, overrides)
    try:
        return recipe_from_dict(values)
    except UserError as e:
        raise UserError(f"{path}: {e}") from None


def _merge(base, child):
    merged = dict(base)
    for key, value in child.items():
        if (isinstance(value, dict) and isinstance(merged.get(key), dict)
                and key not in _REPLACED_WHOLE):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _with_base(values, path, seen):
    """Resolves ``base: OTHER.yaml`` (relative to the file): the child overrides it."""
    base = values.pop("base", None)
    if base is None:
        return values
    if not isinstance(base, str):
        raise UserError(f"{path}: base must be the path of another recipe, got {base!r}.")
    base_path = os.path.normpath(os.path.join(os.path.dirname(path), base))
    if os.path.abspath(base_path) in seen:
        raise UserError(f"{path}: base {base} includes itself.")
    if not os.path.isfile(base_path):
        raise UserError(f"{path}: base recipe {base_path} does not exist.")
    parent = read_yaml_mapping(base_path, "Recipe")
    parent.pop("name", None)
    parent = _with_base(parent, base_path, seen + (os.path.abspath(base_path),))
    return _merge(parent, values)


def save_recipe(recipe, path):
    """Writes the resolved recipe as YAML (atomically)."""
    atomic_write_text(path, yaml.safe_dump(recipe_to_dict(recipe), sort_keys=False))


