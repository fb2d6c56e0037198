"""``python -m keras_sdmtcnn.fit RECIPE [--set k=v ...] [--run-dir DIR]``: train a recipe.

Checks the recipe first (without loading TensorFlow), then trains it into
its run directory (``workflows/train.py``); the same command again resumes
an unfinished run.
"""

import argparse

from keras_sdmtcnn import cli


def build_parser(parser=None):
    parser = parser or argparse.ArgumentParser(
        prog="python -m keras_sdmtcnn.fit", description="Train an SD-MTCNN from a recipe.")
    parser.add_argument("recipe", help="YAML recipe, e.g. recipes/synthetic.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe field, e.g. --set training.epochs=3")
    parser.add_argument("--run-dir", help="run directory (default: runs/<recipe name>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="start afresh even if the run directory holds a run")
    return parser


def run(args):
    from keras_sdmtcnn.config import load_recipe

    recipe = load_recipe(args.recipe, args.set)
    from keras_sdmtcnn.workflows.train import fit

    fit(recipe, args.run_dir, args.overwrite)


def main(argv=None):
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    cli.run(main)
