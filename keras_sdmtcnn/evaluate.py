"""``python -m keras_sdmtcnn.evaluate RUN_DIR_OR_MODEL [--recipe R]``: paper-style tables.

Evaluates the Teacher and the Student on the recipe's validation split,
prints a table (↑ higher is better, ↓ lower is better) and writes it as
``evaluation.json`` and ``evaluation.md`` beside the model. Also takes an
exported ``.tflite``, ``.onnx`` or SavedModel folder and reports the same
metrics for its branch (``workflows/evaluate.py``).

In a notebook: ``from keras_sdmtcnn import load_run`` (``workflows/notebook.py``;
also importable from here, as before).
"""

import argparse

from keras_sdmtcnn import cli


def load_run(path, recipe_path=None, overrides=(), splits=("val",)):
    """A :class:`~keras_sdmtcnn.workflows.notebook.Run` (``workflows/notebook.py``)."""
    from keras_sdmtcnn.workflows.notebook import load_run as load

    return load(path, recipe_path, overrides, splits)


def build_parser(parser=None):
    parser = parser or argparse.ArgumentParser(
        prog="python -m keras_sdmtcnn.evaluate",
        description="Evaluate the Teacher and Student of a trained run.")
    parser.add_argument("path",
                        help="run directory, .keras model, or exported .tflite/.onnx/SavedModel")
    parser.add_argument("--recipe", help="recipe (default: the run's recipe.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", help="where to write evaluation.json/.md")
    parser.add_argument(
        "--convention", choices=("pooled", "mtan"),
        help="pooled: pixels pooled over the split (default, LibMTL); mtan: depth and "
             "normal metrics as means of per-batch values, as MTAN's code (batch size: "
             "evaluation.batch_size, default training.batch_size)")
    parser.add_argument(
        "--runtime", choices=("interpreter", "compiled_model"),
        help="for a .tflite file: LiteRT's Interpreter (default) or CompiledModel, the API "
             "Android apps use with LiteRT 2.x (here on the CPU)")
    return parser


def run(args):
    from keras_sdmtcnn.workflows.evaluate import evaluate

    overrides = list(args.set)
    if args.convention:
        overrides.append(f"evaluation.convention={args.convention}")
    evaluate(args.path, args.recipe, overrides, args.out, runtime=args.runtime)


def main(argv=None):
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    cli.run(main)
