"""``python -m keras_sdmtcnn.fit RECIPE [--set k=v ...] [--run-dir DIR]``: train a recipe.

Checks the recipe first (without loading TensorFlow), then trains it into
its run directory (``workflows/train.py``) in a supervised child process
(``process/supervisor.py``): a crash, an out-of-memory kill, SIGTERM or
Ctrl-C ends with one line saying what happened. The same command again
resumes an unfinished run.
"""

import argparse

from keras_sdmtcnn import cli
from keras_sdmtcnn.process import supervisor


def build_parser(parser=None):
    parser = parser or argparse.ArgumentParser(
        prog="python -m keras_sdmtcnn.fit", description="Train an SD-MTCNN from a recipe.")
    parser.add_argument("recipe", help="YAML recipe, e.g. recipes/synthetic.yaml")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a recipe field, e.g. --set training.epochs=3")
    parser.add_argument("--run-dir", help="run directory (default: runs/<recipe name>)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a finished run (the old one stays until the new one "
                             "is complete)")
    return parser


def _argv(args):
    """The command line of ``args`` (for the supervised child)."""
    argv = [args.recipe]
    for override in args.set:
        argv += ["--set", override]
    if args.run_dir:
        argv += ["--run-dir", args.run_dir]
    return argv + (["--overwrite"] if args.overwrite else [])


def run(args):
    from keras_sdmtcnn.config import load_recipe
    from keras_sdmtcnn.workflows import train

    recipe = load_recipe(args.recipe, args.set)
    if supervisor.in_child():
        train.fit(recipe, args.run_dir, args.overwrite)
        return 0
    ending = train.Ending(recipe, args.run_dir, args.overwrite)
    return supervisor.supervise("keras_sdmtcnn.fit", _argv(args), ending.stopped, ending.died,
                                stderr=cli.logs.real_stderr())


def main(argv=None):
    return run(build_parser().parse_args(argv))


def main_in_this_process(argv=None):
    """``main`` without the supervising parent (the child, and tests that patch the code)."""
    args = build_parser().parse_args(argv)
    from keras_sdmtcnn.config import load_recipe
    from keras_sdmtcnn.workflows.train import fit

    fit(load_recipe(args.recipe, args.set), args.run_dir, args.overwrite)


if __name__ == "__main__":
    cli.run(main)
