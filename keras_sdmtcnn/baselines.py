"""``python -m keras_sdmtcnn.baselines RECIPE``: what trivial predictors score.

Constant predictions fitted on the training split, scored on the validation
split with the models' metrics (``workflows/baselines.py``).
"""

import argparse

from keras_sdmtcnn import cli


def build_parser(parser=None):
    parser = parser or argparse.ArgumentParser(
        prog="python -m keras_sdmtcnn.baselines",
        description="Scores of constant predictors on a recipe's validation split.")
    parser.add_argument("recipe")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    return parser


def run(args):
    from keras_sdmtcnn.config import load_recipe

    recipe = load_recipe(args.recipe, args.set)
    from keras_sdmtcnn.workflows.baselines import trivial_baselines

    for key, value in trivial_baselines(recipe).items():
        print(f"{key:<32} {value:.4f}")


def main(argv=None):
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    cli.run(main)
