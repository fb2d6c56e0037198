"""``python -m keras_sdmtcnn.data prepare|check|throughput``: dataset tools.

``prepare FORMAT RAW_ROOT OUT_ROOT`` converts the official downloads of
CityScapes or NYUv2 into the layout the readers take (or writes
Mini-Taskonomy's split files), resumably, then checks what it wrote
(``data/prepare/``).
``check ROOT --format nyuv2|cityscapes|taskonomy`` verifies every file of a
dataset (``data/check.py``); ``throughput RECIPE`` measures how many training
samples per second the input pipeline delivers on its own (it must never be
the bottleneck of training).
"""

import argparse
import sys

from keras_sdmtcnn import cli
from keras_sdmtcnn.data.prepare import PREPARED_FORMATS

CHECKED_FORMATS = ("nyuv2", "cityscapes", "taskonomy")


def build_parser(parser=None):
    parser = parser or argparse.ArgumentParser(prog="python -m keras_sdmtcnn.data")
    sub = parser.add_subparsers(dest="data_command", required=True)
    prep = sub.add_parser("prepare", help="official downloads -> the layout fit reads")
    prep.add_argument("format", choices=PREPARED_FORMATS)
    prep.add_argument("raw_root", help="the folder the downloads were unpacked into")
    prep.add_argument("out_root", help="a new or empty folder (or an unfinished one, to resume)")
    prep.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                      help="stored size (default: the paper's, 128 256 or 288 384)")
    prep.add_argument("--split", nargs="+", help="splits to write (default: train val)")
    prep.add_argument("--depth", default="disparity_px", choices=("disparity_px", "metres"),
                      help="CityScapes: disparity in pixels at the stored size, or metres")
    prep.add_argument("--normals", metavar="DIR",
                      help="NYUv2: read normals from DIR/{k}.npy instead of computing them")
    prep.add_argument("--splits-csv", metavar="CSV",
                      help="Taskonomy: the official train_val_test_*.csv")
    prep.add_argument("--tasks", nargs="+",
                      help="Taskonomy: the tasks whose folders every building needs")
    check = sub.add_parser("check", help="verify every file of a dataset")
    check.add_argument("root")
    check.add_argument("--format", required=True, choices=CHECKED_FORMATS)
    speed = sub.add_parser("throughput", help="samples/s of the training pipeline alone")
    speed.add_argument("recipe")
    speed.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    speed.add_argument("--batches", type=int, default=50)
    return parser


def _prepare(args):
    from keras_sdmtcnn.data.prepare import prepare_dataset

    bar = {}

    def progress(done, total):
        if "bar" not in bar:
            import keras

            bar["bar"] = keras.utils.Progbar(total, unit_name="sample")
        bar["bar"].update(done)

    record, written = prepare_dataset(
        args.format, args.raw_root, args.out_root, args.size, args.split, progress,
        depth_units=args.depth, normals=args.normals, splits_csv=args.splits_csv,
        tasks=args.tasks)
    counts = ", ".join(f"{k} {v['buildings'] if isinstance(v, dict) else v}"
                       for k, v in record["splits"].items())
    unit = "buildings" if args.format == "taskonomy" else "samples"
    print(f"{args.out_root}: {counts} {unit} ({written} written now); "
          f"conventions in {args.out_root}/prepare.json")
    if args.format == "taskonomy":
        print("Use in a recipe: " + ", ".join(f"{k}: {v}" for k, v in record["use"].items()))
        return
    _check(args.out_root, args.format)


def _check(root, fmt):
    from keras_sdmtcnn.data.check import MAX_LISTED, check_dataset

    report = check_dataset(root, fmt)
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


def run(args):
    if args.data_command == "prepare":
        _prepare(args)
        return
    if args.data_command == "throughput":
        from keras_sdmtcnn.config import load_recipe
        from keras_sdmtcnn.data.datasets import pipeline_throughput

        recipe = load_recipe(args.recipe, args.set)
        rate = pipeline_throughput(recipe, args.batches)
        print(f"{recipe.name}: training pipeline delivers {rate:.1f} samples/s "
              f"(batch {recipe.training.batch_size}, {tuple(recipe.data.image_size)})")
        return
    _check(args.root, args.format)


def main(argv=None):
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    cli.run(main)
