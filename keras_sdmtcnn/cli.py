"""The ``sdmtcnn`` console script and the one error handler every command shares.

``sdmtcnn COMMAND ...`` is the same as ``python -m keras_sdmtcnn.COMMAND ...``
(``sdmtcnn data check ...`` as ``python -m keras_sdmtcnn.data check ...``):
each command module gives its argument parser (``build_parser``) and what it
runs (``run``). Bad input raised as :class:`~keras_sdmtcnn.errors.UserError`
ends a command with one ``error: ...`` line on stderr and exit status 2.
"""

import argparse
import importlib
import os
import sys

# Quieter TensorFlow start-up for command-line use (the user can override).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_sdmtcnn.errors import UserError  # noqa: E402

# Subcommand -> command module (each has build_parser(parser) and run(args)).
COMMANDS = {
    "fit": ("keras_sdmtcnn.fit", "train a recipe into a run directory"),
    "evaluate": ("keras_sdmtcnn.evaluate", "Teacher and Student metrics of a run or export"),
    "export": ("keras_sdmtcnn.export", "export a branch as SavedModel, TFLite or ONNX"),
    "predict": ("keras_sdmtcnn.predict", "prediction panels for images"),
    "bench": ("keras_sdmtcnn.bench", "benchmark every path of a recipe"),
    "experiments": ("keras_sdmtcnn.experiments", "run a plan of recipes and tabulate it"),
    "data": ("keras_sdmtcnn.data.__main__", "check datasets, measure the input pipeline"),
    "baselines": ("keras_sdmtcnn.baselines", "scores of constant predictors"),
    "model_size": ("keras_sdmtcnn.model_size", "parameters and FLOPs per branch"),
    "latency": ("keras_sdmtcnn.latency", "TFLite latency of Teacher vs Student"),
}


def run(main_fn, argv=None):
    """Calls ``main_fn(argv)``; a UserError prints ``error: ...`` and exits with 2."""
    try:
        main_fn(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


def _main(argv=None):
    parser = argparse.ArgumentParser(
        prog="sdmtcnn", description="Self-distilled multi-task CNNs: train, evaluate, export.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.set_defaults(module=module)
        importlib.import_module(module).build_parser(command)
    args = parser.parse_args(argv)
    importlib.import_module(args.module).run(args)


def main(argv=None):
    """Entry point of the ``sdmtcnn`` console script."""
    run(_main, argv)


if __name__ == "__main__":
    main()
