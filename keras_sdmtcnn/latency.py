"""``python -m keras_sdmtcnn.latency``: TFLite latency of the Teacher and the Student.

Builds an SD-MTCNN at the given size (or a recipe's; weights do not change
float latency), converts each branch to a builtins-only ``.tflite`` through
the same serving graph as ``export``, and times one image (batch 1) at 1 and
2 threads (``deploy/latency.py``).
"""

import argparse

from keras_sdmtcnn import cli


def build_parser(parser=None):
    parser = parser or argparse.ArgumentParser(prog="python -m keras_sdmtcnn.latency",
                                               description="TFLite latency of Teacher vs Student.")
    parser.add_argument("--tasks", default="semantic,depth,normal")
    parser.add_argument("--num-classes", type=int, default=13)
    parser.add_argument("--height", type=int, default=288)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--width-multiplier", type=float, default=1.0)
    parser.add_argument("--quantize", nargs="+", default=["none"])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--all-runtimes", action="store_true",
                        help="also Keras, SavedModel and ONNX Runtime")
    parser.add_argument("--recipe", help="build the recipe's model (tasks, size, widths) instead")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", help="write the figures as JSON")
    return parser


def run(args):
    from keras_sdmtcnn.config import load_recipe

    recipe = load_recipe(args.recipe, args.set) if args.recipe else None
    from keras_sdmtcnn.deploy.latency import measure, measure_recipe, student_over_teacher
    from keras_sdmtcnn.io import atomic_write_json

    if recipe is not None:
        results = measure_recipe(recipe, args.quantize, args.runs, args.all_runtimes)
    else:
        results = measure(args.tasks.split(","), args.num_classes, (args.height, args.width),
                          args.width_multiplier, args.quantize, runs=args.runs,
                          other_runtimes=args.all_runtimes)
    for line in student_over_teacher(results, args.quantize):
        print(line)
    if args.out:
        atomic_write_json(args.out, results)


def main(argv=None):
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    cli.run(main)
