"""``python -m keras_sdmtcnn.predict MODEL IMAGE_OR_DIR... --out DIR``: predictions as pictures.

MODEL is a run directory or full-model ``.keras`` file (Teacher and Student
side by side), or an exported ``.tflite``, ``.onnx`` or SavedModel (its one
branch). One PNG panel per image goes into DIR (``workflows/predict.py``).
"""

import argparse

from keras_sdmtcnn import cli


def build_parser(parser=None):
    parser = parser or argparse.ArgumentParser(
        prog="python -m keras_sdmtcnn.predict",
        description="Predict on images and write one picture panel per image.")
    parser.add_argument("model", help="run directory, .keras, .tflite, .onnx or SavedModel")
    parser.add_argument("inputs", nargs="+", help="PNG/JPEG images or folders of them")
    parser.add_argument("--out", required=True, help="output folder for the panels")
    parser.add_argument("--recipe", help="recipe (default: the run's recipe.yaml)")
    return parser


def run(args):
    from keras_sdmtcnn.workflows.predict import predict

    predict(args.model, args.inputs, args.out, args.recipe)


def main(argv=None):
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    cli.run(main)
