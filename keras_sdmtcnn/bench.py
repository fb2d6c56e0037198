"""``python -m keras_sdmtcnn.bench --recipe RECIPE [--out bench.json]``: the cost of every path.

Parameters and FLOPs, train step per objective, convolution throughput,
evaluation and input-pipeline rates, batch-1 latency in every runtime, peak
memory, XLA and the allocator against the default step, and the machine
(``workflows/bench.py``; figures in ``docs/benchmarks.md``).

``--against DIR`` instead times this checkout's train step against another
checkout's (``git worktree add DIR COMMIT``), both running at once and
taking turns in blocks of steps (``workflows/paired.py``).
"""

import argparse
import json

from keras_sdmtcnn import cli


def build_parser(parser=None):
    parser = parser or argparse.ArgumentParser(prog="python -m keras_sdmtcnn.bench",
                                               description="Benchmark every path of a recipe.")
    parser.add_argument("--recipe", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--quantize", nargs="+", default=["none", "fp16", "int8"])
    parser.add_argument("--out", help="write the figures as JSON (atomically)")
    parser.add_argument("--train-step-only", action="store_true",
                        help="only the separate train step's seconds (the allocator and XLA "
                             "comparisons run it in fresh processes)")
    parser.add_argument("--xla", action="store_true", help="with --train-step-only: jit_compile")
    parser.add_argument("--quick", action="store_true",
                        help="leave out the XLA and allocator comparisons (fresh processes)")
    parser.add_argument("--against", metavar="DIR",
                        help="only the train step, against another checkout of this project "
                             "in DIR, timed in alternating blocks (paired)")
    parser.add_argument("--blocks", type=int, default=16,
                        help="with --against: blocks per checkout (default 16)")
    parser.add_argument("--block-steps", type=int, default=10,
                        help="with --against: train steps per block (default 10)")
    return parser


def run(args):
    from keras_sdmtcnn.io import atomic_write_json
    from keras_sdmtcnn.workflows.bench import bench, table, train_step_only

    if args.against:
        from keras_sdmtcnn.workflows.paired import paired_table, paired_train_steps

        result = paired_train_steps(args.recipe, args.set, args.against, args.blocks,
                                    args.block_steps)
        print(paired_table(result))
    elif args.train_step_only:
        result = train_step_only(args.recipe, args.set, args.steps, args.xla)
        print(json.dumps(result))
    else:
        result = bench(args.recipe, args.set, args.steps, args.quantize,
                       compare_options=not args.quick)
        print(table(result))
    if args.out:
        atomic_write_json(args.out, result)


def main(argv=None):
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    cli.run(main)
