"""``python -m keras_sdmtcnn.evaluate RUN_DIR_OR_MODEL [--recipe R]``: paper-style tables.

Also takes an exported ``.tflite``, ``.onnx`` or SavedModel folder (written by
``keras_sdmtcnn.export``; its recipe comes from its ``metadata.json``) and
reports the same metrics for its branch.

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

    import keras_sdmtcnn.registry  # noqa: F401  (registers the classes)
    from keras_sdmtcnn.data import build_datasets
    from keras_sdmtcnn.recipes import load_recipe

    model_file, recipe_file = resolve(path, recipe_path)
    recipe = load_recipe(recipe_file, overrides)
    model = keras.models.load_model(model_file)
    datasets, _ = build_datasets(recipe, verbose=False, splits=splits)
    return model, recipe, datasets


def evaluate_exported(path, recipe_path=None, overrides=(), verbose=1):
    """Task metrics of an exported ``.tflite``, ``.onnx`` or SavedModel on the val split.

    Images go in as the export expects (raw pixels of its input dtype), so the
    cost of quantisation shows in the same metrics as for the Keras model.
    """
    import keras

    from keras_sdmtcnn.data import build_datasets
    from keras_sdmtcnn.metrics import make_task_metric
    from keras_sdmtcnn.recipes import apply_overrides, load_recipe, recipe_from_dict
    from keras_sdmtcnn.runtime import load_exported
    from keras_sdmtcnn.serving import to_raw_pixels

    runtime = load_exported(path)
    meta = runtime.metadata
    if recipe_path:
        recipe = load_recipe(recipe_path, overrides)
    else:
        values = apply_overrides(dict(meta["recipe"]), overrides)
        recipe = recipe_from_dict(values)
    datasets, info = build_datasets(recipe, verbose=False, splits=("val",))
    branch = meta["branch"]
    metrics = {t: make_task_metric(t, f"{t}_{branch}", info.num_classes, info.ignore_label)
               for t in meta["tasks"]}
    bar = keras.utils.Progbar(info.num_val, unit_name="image") if verbose else None
    seen = 0
    for x, y in datasets["val"]:
        for i in range(x.shape[0]):
            raw = to_raw_pixels(x[i].numpy(), recipe.data.image_normalization,
                                runtime.input_dtype)
            out = runtime(raw[None])
            for task, metric in metrics.items():
                pred = out["semantic_logits" if task == "semantic" else task]
                metric.update_state(y[task][i:i + 1], pred)
            seen += 1
            if bar:
                bar.update(seen)
    results = {}
    for metric in metrics.values():
        results.update({k: float(v) for k, v in metric.result().items()})
    return results, recipe


def evaluate(path, recipe_path=None, overrides=(), out_dir=None, verbose=1):
    """Evaluates a run, a model or an exported file; returns the results dict.

    Writes ``evaluation.json`` and ``evaluation.md`` beside what was evaluated.
    """
    from keras_sdmtcnn.io import atomic_write_json, atomic_write_text
    from keras_sdmtcnn.reporting import markdown_table, result_rows
    from keras_sdmtcnn.runtime import export_format

    if export_format(path) is not None:
        results, recipe = evaluate_exported(path, recipe_path, overrides, verbose)
        table = markdown_table(result_rows(results, list(recipe.data.tasks)))
        folder = out_dir or (os.path.dirname(path) if not os.path.isdir(path)
                             else os.path.dirname(os.path.normpath(path)))
        atomic_write_json(os.path.join(folder, "evaluation.json"), results)
        atomic_write_text(os.path.join(folder, "evaluation.md"),
                          f"{path} on the validation split of `{recipe.name}`\n\n" + table)
        if verbose:
            print(table)
        return results

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
    parser.add_argument("path", help="run directory, .keras model, or exported .tflite/.onnx/SavedModel")
    parser.add_argument("--recipe", help="recipe (default: the run's recipe.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", help="where to write evaluation.json/.md")
    args = parser.parse_args(argv)
    evaluate(args.path, args.recipe, args.set, args.out)


if __name__ == "__main__":
    cli.run(main)
