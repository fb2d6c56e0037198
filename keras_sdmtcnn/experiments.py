"""``python -m keras_sdmtcnn.experiments PLAN.yaml``: run recipes, tabulate them as the paper does.

Loads and checks the plan and every recipe in it, trains what is not
finished yet (resuming interrupted runs), then writes ``results.md``,
``results.csv`` and ``curves.png`` into the plan's folder
(``workflows/experiments.py``; plan files: ``config/plans.py``).
"""

import argparse

from keras_sdmtcnn import cli
from keras_sdmtcnn.process import supervisor


def build_parser(parser=None):
    parser = parser or argparse.ArgumentParser(
        prog="python -m keras_sdmtcnn.experiments",
        description="Run the recipes of a plan and tabulate them in the paper's layout.")
    parser.add_argument("plan", help="plan YAML, e.g. recipes/paper/synthetic/plan.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                        help="run every recipe with these seeds instead of the plan's `seeds`")
    parser.add_argument("--delta-m", choices=("libmtl", "cagrad"),
                        help="Delta_m convention of the tables instead of the plan's `delta_m`")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch output")
    return parser


def _argv(args):
    argv = [args.plan]
    if args.seeds:
        argv += ["--seeds", *map(str, args.seeds)]
    if args.delta_m:
        argv += ["--delta-m", args.delta_m]
    return argv + (["--quiet"] if args.quiet else [])


def run(args):
    from keras_sdmtcnn.workflows import experiments

    if supervisor.in_child():
        experiments.run_experiments(args.plan, verbose=0 if args.quiet else 1,
                                    seeds=args.seeds, delta_m=args.delta_m)
        return 0
    return supervisor.supervise("keras_sdmtcnn.experiments", _argv(args), experiments.stopped,
                                experiments.died, stderr=cli.logs.real_stderr())


def main(argv=None):
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    cli.run(main)
