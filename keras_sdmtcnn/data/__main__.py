"""``python -m keras_sdmtcnn.data check|throughput``: dataset tools.

``check ROOT --format nyuv2|cityscapes|taskonomy`` verifies every file of a
dataset (``data/check.py``); ``throughput RECIPE`` measures how many training
samples per second the input pipeline delivers on its own (it must never be
the bottleneck of training).
"""

import argparse
import sys

from keras_sdmtcnn import cli

CHECKED_FORMATS = ("nyuv2", "cityscapes", "taskonomy")


def build_parser(parser=None):
    parser = parser or argparse.ArgumentParser(prog="python -m keras_sdmtcnn.data")
    sub = parser.add_subparsers(dest="data_command", required=True)
    check = sub.add_parser("check", help="verify every file of a dataset")
    check.add_argument("root")
    check.add_argument("--format", required=True, choices=CHECKED_FORMATS)
    speed = sub.add_parser("throughput", help="samples/s of the training pipeline alone")
    speed.add_argument("recipe")
    speed.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    speed.add_argument("--batches", type=int, default=50)
    return parser


def run(args):
    if args.data_command == "throughput":
        from keras_sdmtcnn.config import load_recipe
        from keras_sdmtcnn.data.datasets import pipeline_throughput

        recipe = load_recipe(args.recipe, args.set)
        rate = pipeline_throughput(recipe, args.batches)
        print(f"{recipe.name}: training pipeline delivers {rate:.1f} samples/s "
              f"(batch {recipe.training.batch_size}, {tuple(recipe.data.image_size)})")
        return
    from keras_sdmtcnn.data.check import MAX_LISTED, check_dataset

    report = check_dataset(args.root, args.format)
    for line in report.lines:
        print(line)
    if report.problems:
        print(f"{len(report.problems)} problem(s):", file=sys.stderr)
        for problem in report.problems[:MAX_LISTED]:
            print(f"  {problem}", file=sys.stderr)
        if len(report.problems) > MAX_LISTED:
            print(f"  ... and {len(report.problems) - MAX_LISTED} more", file=sys.stderr)
        sys.exit(1)
    print("OK: no problem found.")


def main(argv=None):
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    cli.run(main)
