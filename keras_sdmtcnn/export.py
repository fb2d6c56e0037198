"""``python -m keras_sdmtcnn.export RUN_DIR_OR_MODEL``: ship a branch as SavedModel, TFLite or ONNX.

::

    python -m keras_sdmtcnn.export runs/synthetic --branch student --format tflite \\
        --quantize none fp16 int8

Each export is a folder ``saved_models/<name>/<branch>-<format>[-<quantize>]/``
with the model and ``metadata.json``, written only after a parity check
against the Keras model passes (``workflows/export.py``; the Android guide
is ``docs/deploying.md``).
"""

import argparse

from keras_sdmtcnn import cli


def build_parser(parser=None):
    parser = parser or argparse.ArgumentParser(
        prog="python -m keras_sdmtcnn.export",
        description="Export the Student or Teacher as SavedModel, TFLite or ONNX.")
    parser.add_argument("source", help="run directory or full-model .keras file")
    parser.add_argument("--branch", default="student", choices=("student", "teacher"))
    parser.add_argument("--format", nargs="+", default=["tflite"], dest="formats",
                        help="saved_model, tflite, onnx (several allowed)")
    parser.add_argument("--quantize", nargs="+", default=["none"],
                        help="none, fp16, dynamic_int8, int8 (tflite only for all but none)")
    parser.add_argument("--recipe", help="recipe (default: the run's recipe.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", help="output folder (default saved_models/<recipe name>)")
    parser.add_argument("--name", help="export name (default: the recipe's name)")
    parser.add_argument("--input-dtype", default="uint8", choices=("uint8", "float32"))
    parser.add_argument("--samples", type=int, default=8, help="parity samples")
    return parser


def run(args):
    from keras_sdmtcnn.workflows.export import export_variants

    variants = [(fmt, quantize) for fmt in args.formats for quantize in args.quantize]
    export_variants(args.source, args.branch, variants, args.out, args.recipe, args.set,
                    args.name, args.input_dtype, args.samples)


def main(argv=None):
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    cli.run(main)
