"""Evaluating runs, models and exported files: what ``python -m keras_sdmtcnn.evaluate`` calls.

Also takes an exported ``.tflite``, ``.onnx`` or SavedModel folder (written by
``keras_sdmtcnn.export``; its recipe comes from its ``metadata.json``) and
reports the same metrics for its branch.

Evaluates the Teacher and the Student on the recipe's validation split,
prints a table (rows Teacher and Student, columns the task metrics with ↑
for higher-is-better and ↓ for lower-is-better) and writes it as
``evaluation.json`` and ``evaluation.md`` beside the model.

In Python, :func:`keras_sdmtcnn.load_run` (``workflows/notebook.py``).
"""

import os

from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.runs.rundir import RunDir

SPLITS = ("train", "val")


def _splits(splits):
    """``splits`` as a tuple of known names (a single name may be a string)."""
    splits = (splits,) if isinstance(splits, str) else tuple(splits)
    for split in splits:
        if split not in SPLITS:
            hint = (" The validation split is 'val'; the recipe's data.val_source says whether "
                    "it is the dataset's own validation or test split, or a held-out part of "
                    "train." if split == "test" else "")
            raise UserError(f"splits: unknown split {split!r}; choose from "
                            f"{', '.join(SPLITS)}.{hint}")
    return splits


def check_image_size(model, recipe, where):
    """The recipe's ``data.image_size`` must be the size the model was built for."""
    built = tuple(model.inputs[0].shape[1:3])
    wanted = tuple(recipe.data.image_size)
    if None not in built and built != wanted:
        raise UserError(
            f"data.image_size is {wanted[0]} x {wanted[1]} (height x width), but {where} was "
            f"built for {built[0]} x {built[1]}: leave data.image_size as the run's recipe "
            "has it (images of another size are resized to it), or train at that size.")


def load_model_and_datasets(path, recipe_path=None, overrides=(), splits=("val",)):
    """``(model, recipe, {split: dataset}, model file)`` of a run or model file.

    Changes no process-wide setting. In Python, :func:`keras_sdmtcnn.load_run`
    (``workflows/notebook.py``) returns these as a ``Run``.
    """
    from keras_sdmtcnn.config import load_recipe
    from keras_sdmtcnn.data.datasets import build_datasets
    from keras_sdmtcnn.training.saving import load_model

    splits = _splits(splits)
    model_file, recipe_file = RunDir.resolve(str(path), recipe_path)
    recipe = load_recipe(recipe_file, overrides)
    model = load_model(model_file)
    check_image_size(model, recipe, model_file)
    if hasattr(model, "set_evaluation_convention"):
        model.set_evaluation_convention(recipe.evaluation.convention)
    datasets, _ = build_datasets(recipe, verbose=False, splits=splits)
    return model, recipe, datasets, model_file


def evaluate_exported(path, recipe_path=None, overrides=(), verbose=1, runtime="interpreter"):
    """Task metrics of an exported ``.tflite``, ``.onnx`` or SavedModel on the val split.

    Images go in as the export expects (raw pixels of its input dtype), so the
    cost of quantisation shows in the same metrics as for the Keras model.
    ``runtime``: LiteRT's ``interpreter`` or ``compiled_model`` API for a
    ``.tflite`` file (``deploy/runtime.py``).
    """
    import keras
    import numpy as np

    from keras_sdmtcnn.config import apply_overrides, load_recipe, recipe_from_dict
    from keras_sdmtcnn.data.datasets import build_datasets
    from keras_sdmtcnn.data.preprocessing import to_raw_pixels
    from keras_sdmtcnn.deploy.runtime import load_exported
    from keras_sdmtcnn.tasks import get_task
    from keras_sdmtcnn.training.metrics import make_task_metric

    runtime = load_exported(path, runtime=runtime)
    meta = runtime.metadata
    if recipe_path:
        recipe = load_recipe(recipe_path, overrides)
    else:
        values = apply_overrides(dict(meta["recipe"]), overrides)
        recipe = recipe_from_dict(values)
    exported = tuple(runtime.input_shape[1:3])
    if tuple(recipe.data.image_size) != exported:
        raise UserError(
            f"data.image_size is {recipe.data.image_size[0]} x {recipe.data.image_size[1]} "
            f"(height x width), but {path} takes {exported[0]} x {exported[1]} images: leave "
            "data.image_size as the export's recipe has it.")
    datasets, info = build_datasets(recipe, verbose=False, splits=("val",))
    branch = meta["branch"]
    metrics = {t: make_task_metric(t, f"{t}_{branch}", info.num_classes, info.ignore_label,
                                   recipe.evaluation.convention)
               for t in meta["tasks"]}
    bar = keras.utils.Progbar(info.num_val, unit_name="image") if verbose else None
    seen = 0
    for x, y in datasets["val"]:
        # One image at a time (exported files take a batch of one), then the
        # metrics see the whole batch (the mtan convention averages per batch).
        outputs = {task: [] for task in metrics}
        for i in range(x.shape[0]):
            raw = to_raw_pixels(x[i].numpy(), recipe.data.image_normalization,
                                runtime.input_dtype)
            out = runtime(raw[None])
            for task in metrics:
                outputs[task].append(np.asarray(out[get_task(task).value_output]))
            seen += 1
            if bar:
                bar.update(seen)
        for task, metric in metrics.items():
            metric.update_state(y[task], np.concatenate(outputs[task]))
    results = {}
    for metric in metrics.values():
        results.update({k: float(v) for k, v in metric.result().items()})
    return results, recipe


def convention_note(recipe):
    """The line under a table that says how its numbers were computed."""
    evaluation = recipe.evaluation
    if evaluation.convention == "mtan":
        batch = evaluation.batch_size or recipe.training.batch_size
        return (f"\nConvention `mtan`: depth and normal metrics are means of per-batch values "
                f"(batches of {batch}), as MTAN's code; mIoU and pixel accuracy pool a "
                "confusion matrix over the split.\n")
    return ("\nConvention `pooled`: every metric pools the pixels of the whole split "
            "(LibMTL's).\n")


def evaluate(path, recipe_path=None, overrides=(), out_dir=None, verbose=1, runtime=None):
    """Evaluates a run, a model or an exported file; returns the results dict.

    Writes ``evaluation.json`` and ``evaluation.md`` beside what was evaluated.
    """
    from keras_sdmtcnn.deploy.runtime import export_format
    from keras_sdmtcnn.runs.reporting import markdown_table, result_rows
    from keras_sdmtcnn.training.metrics import warn_empty

    if runtime not in (None, "interpreter") and export_format(path) != "tflite":
        raise UserError(f"--runtime {runtime} runs exported .tflite files; {path} is not one.")
    if export_format(path) is not None:
        results, recipe = evaluate_exported(path, recipe_path, overrides, verbose,
                                            runtime or "interpreter")
        warn_empty(results, "validation")
        table = markdown_table(result_rows(results, list(recipe.data.tasks)))
        table += convention_note(recipe)
        folder = out_dir or (os.path.dirname(path) if not os.path.isdir(path)
                             else os.path.dirname(os.path.normpath(path)))
        RunDir(folder).write_evaluation(
            results, table, f"{path} on the validation split of `{recipe.name}`")
        if verbose:
            print(table)
        return results

    from keras_sdmtcnn.config import load_recipe
    from keras_sdmtcnn.process.settings import configure_process

    configure_process(load_recipe(RunDir.resolve(str(path), recipe_path)[1], overrides))
    model, recipe, datasets, _ = load_model_and_datasets(path, recipe_path, overrides)
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
    warn_empty(results, "validation")
    table = markdown_table(result_rows(results, list(recipe.data.tasks)))
    table += convention_note(recipe)
    out_dir = out_dir or (path if os.path.isdir(path) else os.path.dirname(path))
    RunDir(out_dir).write_evaluation(results, table,
                                     f"Validation split of recipe `{recipe.name}`")
    if verbose:
        print(table)
    return results
