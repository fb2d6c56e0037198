"""``python -m keras_sdmtcnn.model_size``: parameters and forward FLOPs per branch.

FLOPs are 2 x multiply-accumulates of the convolutions, counted from layer
shapes for one image (``models/size.py``).
"""

import argparse
import json

from keras_sdmtcnn import cli


def build_parser(parser=None):
    parser = parser or argparse.ArgumentParser(
        prog="python -m keras_sdmtcnn.model_size",
        description="Parameters and forward FLOPs of the Teacher and the Student.")
    parser.add_argument("--tasks", default="semantic,depth,normal")
    parser.add_argument("--num-classes", type=int, default=13)
    parser.add_argument("--height", type=int, default=288)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--width-multiplier", type=float, default=1.0)
    parser.add_argument("--decoder", default="segnet", choices=("segnet", "unet"))
    parser.add_argument("--no-attention", action="store_true")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    return parser


def run(args):
    from keras_sdmtcnn.models.size import size_of

    size = size_of(args.tasks.split(","), num_classes=args.num_classes,
                   image_size=(args.height, args.width), width_multiplier=args.width_multiplier,
                   decoder=args.decoder, attention=not args.no_attention)
    if args.json:
        print(json.dumps(size, indent=2))
        return
    print(f"{args.tasks} at {args.height}x{args.width}, width x{args.width_multiplier}, "
          f"{args.decoder}{'' if not args.no_attention else ' without attention'}")
    print(f"{'branch':<8} {'params':>14} {'GFLOPs':>10}")
    for name in ("full", "teacher", "student"):
        print(f"{name:<8} {size[name]['params']:>14,} {size[name]['flops'] / 1e9:>10.1f}")
    print(f"Student / Teacher FLOPs: {size['student_flops_share']:.1%}")


def main(argv=None):
    run(build_parser().parse_args(argv))


if __name__ == "__main__":
    cli.run(main)
