"""``python -m keras_sdmtcnn.evaluate RUN_DIR_OR_MODEL [--recipe R]``: paper-style tables.

Evaluates the Teacher and the Student on the recipe's validation split,
prints a table (rows Teacher and Student, columns the task metrics with ↑
for higher-is-better and ↓ for lower-is-better) and writes it as
``evaluation.json`` and ``evaluation.md`` beside the model.

In a notebook::

    from keras_sdmtcnn.evaluate import load_run
    model, recipe, datasets = load_run("runs/synthetic")
    results = model.evaluate(datasets["val"], return_dict=True)
"""

import argparse
import os

from keras_sdmtcnn import cli
from keras_sdmtcnn.errors import UserError


def resolve(path, recipe_path=None, checkpoint="model.keras"):
    """``(model_file, recipe_file)`` from a run directory or a ``.keras`` file."""
    if os.path.isdir(path):
        model_file = os.path.join(path, checkpoint)
        if not os.path.exists(model_file):
            raise UserError(
                f"{model_file} does not exist: is {path} a finished run directory?"
            )
        recipe_path = recipe_path or os.path.join(path, "recipe.yaml")
    elif path.endswith(".keras") and os.path.isfile(path):
        model_file = path
        if recipe_path is None:
            guess = os.path.join(os.path.dirname(path), "recipe.yaml")
            if not os.path.exists(guess):
                guess = os.path.join(os.path.dirname(os.path.dirname(path)), "recipe.yaml")
            recipe_path = guess if os.path.exists(guess) else None
    else:
        raise UserError(f"{path} is neither a run directory nor a .keras model file.")
    if recipe_path is None or not os.path.exists(recipe_path):
        raise UserError(f"No recipe found for {path}: pass --recipe RECIPE.yaml.")
    return model_file, recipe_path


def load_run(path, recipe_path=None, overrides=(), splits=("val",)):
    """Loads ``(model, recipe, {split: dataset})`` of a run or model file."""
    import keras

    import keras_sdmtcnn.model  # noqa: F401  (registers the classes)
    from keras_sdmtcnn.data import build_datasets
    from keras_sdmtcnn.recipes import load_recipe

    model_file, recipe_file = resolve(path, recipe_path)
    recipe = load_recipe(recipe_file, overrides)
    model = keras.models.load_model(model_file)
    datasets, _ = build_datasets(recipe, verbose=False, splits=splits)
    return model, recipe, datasets


def evaluate(path, recipe_path=None, overrides=(), out_dir=None, verbose=1):
    """Evaluates a run; returns the results dict and writes the table files."""
    from keras_sdmtcnn.io import atomic_write_json, atomic_write_text
    from keras_sdmtcnn.reporting import markdown_table, result_rows

    model, recipe, datasets = load_run(path, recipe_path, overrides)
    if not getattr(model, "compiled", False) or not hasattr(model, "objective"):
        raise UserError(
            f"{path} is not a full SD-MTCNN model (a sub-model has no objective): "
            "evaluate the run directory or its model.keras."
        )
    results = model.evaluate(
        datasets["val"], steps=recipe.training.validation_steps,
        return_dict=True, verbose=verbose,
    )
    results = {k: float(v) for k, v in results.items()}
    table = markdown_table(result_rows(results, list(recipe.data.tasks)))
    out_dir = out_dir or (path if os.path.isdir(path) else os.path.dirname(path))
    atomic_write_json(os.path.join(out_dir, "evaluation.json"), results)
    atomic_write_text(
        os.path.join(out_dir, "evaluation.md"),
        f"Validation split of recipe `{recipe.name}`\n\n" + table,
    )
    if verbose:
        print(table)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m keras_sdmtcnn.evaluate",
        description="Evaluate the Teacher and Student of a trained run.",
    )
    parser.add_argument("path", help="run directory or .keras model")
    parser.add_argument("--recipe", help="recipe (default: the run's recipe.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", help="where to write evaluation.json/.md")
    args = parser.parse_args(argv)
    evaluate(args.path, args.recipe, args.set, args.out)


if __name__ == "__main__":
    cli.run(main)
