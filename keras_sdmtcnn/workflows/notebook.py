"""A trained run in Python: :func:`load_run` and the :class:`Run` it returns.

What a notebook reaches for after training, as public API::

    from keras_sdmtcnn import load_run

    run = load_run("runs/synthetic")
    results = run.evaluate()            # {task}_{branch}_{metric} on the val split
    print(run.table(results))           # Teacher and Student, as `evaluate` prints it
    run.panels(count=3)                 # PIL images: input, Teacher and Student outputs
    run.curves()                        # PIL image of the training curves
    folder = run.export("exports")      # the Student as .tflite, parity-checked
    run.evaluate_exported(folder + "/model.tflite", runtime="compiled_model")
    model, recipe, datasets = run       # unpacks as load_run always did

Loading changes no process-wide setting (threads per op, precision): a
notebook keeps TensorFlow's defaults.
"""

import os

import numpy as np

from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.runs.rundir import RunDir


class Run:
    """A trained run: its model, recipe and datasets, and what to do with them.

    Attributes:
        model: the trained Keras model (compiled with the run's objective
            and metrics), as saved in the run directory.
        recipe: the run's :class:`~keras_sdmtcnn.config.Recipe`.
        datasets: ``{split: tf.data.Dataset}`` of the splits asked for.
        model_file: the ``.keras`` file the model came from.
        run_dir: the run directory (``None`` for a lone ``.keras`` file).

    It unpacks as ``model, recipe, datasets``.
    """

    def __init__(self, model, recipe, datasets, model_file, run_dir=None):
        self.model, self.recipe, self.datasets = model, recipe, datasets
        self.model_file, self.run_dir = model_file, run_dir

    def __iter__(self):
        return iter((self.model, self.recipe, self.datasets))

    def __repr__(self):
        return (f"Run({self.model_file!r}, tasks={list(self.recipe.data.tasks)}, "
                f"splits={sorted(self.datasets)})")

    @property
    def tasks(self):
        return list(self.recipe.data.tasks)

    def evaluate(self, split="val"):
        """``{metric: value}`` of the Teacher and the Student on ``split`` (as ``evaluate``)."""
        if split not in self.datasets:
            raise UserError(f"split: {split!r} was not loaded; load_run(..., splits=...) "
                            f"loaded {', '.join(sorted(self.datasets))}.")
        results = self.model.evaluate(self.datasets[split], return_dict=True, verbose=0,
                                      steps=self.recipe.training.validation_steps)
        return {k: float(v) for k, v in results.items()}

    def table(self, results=None):
        """The Markdown table ``evaluate`` prints (rows Teacher and Student)."""
        from keras_sdmtcnn.runs.reporting import markdown_table, result_rows

        return markdown_table(result_rows(results or self.evaluate(), self.tasks))

    def predict(self, images):
        """``[(branch, {output: array})]`` for a batch of raw images.

        Args:
            images: ``uint8`` array ``(N, H, W, 3)`` of RGB pixels at the
                run's ``data.image_size`` (one image: ``(H, W, 3)``).
        """
        raw = self._raw(images)
        return [(branch, fn(raw)) for branch, fn in self._predictors()]

    def panels(self, images=None, count=3):
        """PIL images, one per input: the image, then each branch's outputs (as ``predict``).

        Args:
            images: as :meth:`predict`; default: the first ``count`` images
                of the validation split.
        """
        from keras_sdmtcnn.data.preprocessing import to_raw_pixels
        from keras_sdmtcnn.runs.pictures import panel

        if images is None:
            split = "val" if "val" in self.datasets else next(iter(self.datasets))
            batch = np.concatenate([x.numpy() for x, _ in self.datasets[split].take(count)])
            norm = self.recipe.data.image_normalization
            images = np.stack([to_raw_pixels(x, norm, "uint8") for x in batch[:count]])
        raw = self._raw(images)
        predictors = self._predictors()
        pictures = []
        for image in raw:
            rows = [(branch, {k: v for k, v in fn(image[None]).items()})
                    for branch, fn in predictors]
            pictures.append(panel(image, rows, self.tasks))
        return pictures

    def export(self, out_dir, branch="student", fmt="tflite", quantize="none"):
        """Exports a branch as ``python -m keras_sdmtcnn.export`` does; returns its folder.

        The export is checked against this run's Keras model (its parity
        report is in the folder's ``metadata.json``).
        """
        from keras_sdmtcnn.workflows.export import export

        if self.run_dir is None:
            raise UserError(f"{self.model_file} is a lone model file: export needs its run "
                            "directory (load_run(RUN_DIR)).")
        return export(self.run_dir.path, branch, fmt, quantize, str(out_dir), verbose=0)

    def evaluate_exported(self, path, runtime="interpreter"):
        """``{metric: value}`` of an exported file on the validation split (as ``evaluate``).

        ``runtime``: for a ``.tflite`` file, LiteRT's ``interpreter`` or
        ``compiled_model``.
        """
        from keras_sdmtcnn.workflows.evaluate import evaluate_exported

        return evaluate_exported(str(path), verbose=0, runtime=runtime)[0]

    def history(self):
        """Every epoch's logged values (a list of dicts), as ``metrics.json`` holds them."""
        if self.run_dir is None:
            raise UserError(f"{self.model_file} is a lone model file; its run directory holds "
                            "the history: load_run(RUN_DIR).")
        return self.run_dir.read_history()

    def curves(self):
        """The training curves as a PIL image (drawn from :meth:`history`)."""
        import tempfile

        from PIL import Image

        from keras_sdmtcnn.runs.reporting import plot_curves

        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "curves.png")
            plot_curves(self.history(), self.tasks, path)
            with Image.open(path) as picture:
                return picture.copy()

    def _raw(self, images):
        given = np.asarray(images)
        images = given[None] if given.ndim == 3 else given
        size = tuple(self.recipe.data.image_size)
        if images.ndim != 4 or images.shape[1:] != (*size, 3) or images.dtype != np.uint8:
            raise UserError(
                f"images: expected uint8 RGB pixels of shape (N, {size[0]}, {size[1]}, 3) or "
                f"({size[0]}, {size[1]}, 3) (the run's data.image_size), got {given.dtype} "
                f"{given.shape}. Resize and convert first, e.g. with PIL: "
                f"np.asarray(Image.open(p).convert('RGB').resize(({size[1]}, {size[0]}))).")
        return images

    def _predictors(self):
        if getattr(self, "_serving", None) is None:
            import tensorflow as tf

            from keras_sdmtcnn.deploy.serving import serving_function

            self._serving = []
            for branch in ("teacher", "student"):
                if not any(n.endswith(f"_{branch}") for n in self.model.output):
                    continue
                serve, _, _ = serving_function(self.model, branch,
                                               tuple(self.recipe.data.image_size), "uint8",
                                               self.recipe.data.image_normalization)

                def run(raw, serve=serve):
                    return {k: v.numpy() for k, v in serve(tf.constant(raw)).items()}

                self._serving.append((branch, run))
        return self._serving


def load_run(path, recipe_path=None, overrides=(), splits=("val",)):
    """Loads a trained run for Python use: a :class:`Run`.

    Args:
        path: a run directory, or a ``.keras`` model file of one (a
            checkpoint, ``model.keras``).
        recipe_path: the recipe (default: the run's ``recipe.yaml``).
        overrides: ``["key=value", ...]`` applied to the recipe.
        splits: the datasets to build (``"train"``, ``"val"``).

    Example:
        >>> run = load_run("runs/synthetic")
        >>> run.evaluate()["semantic_student_miou"]
    """
    from keras_sdmtcnn.deploy.runtime import export_format
    from keras_sdmtcnn.workflows.evaluate import load_model_and_datasets

    path = str(path)
    if export_format(path) is not None:
        raise UserError(f"path: {path} is an exported file, not a run; load_run takes a run "
                        "directory or its .keras model. Evaluate an export with "
                        "Run.evaluate_exported, or python -m keras_sdmtcnn.evaluate PATH.")
    if not os.path.exists(path):
        raise UserError(f"path: {path} does not exist; load_run takes a run directory (what "
                        "fit wrote) or a .keras model file of one.")
    model, recipe, datasets, model_file = load_model_and_datasets(path, recipe_path, overrides,
                                                                  splits)
    folder = path if os.path.isdir(path) else None
    return Run(model, recipe, datasets, model_file, RunDir(folder) if folder else None)
