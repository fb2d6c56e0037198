"""``python -m keras_sdmtcnn.model_size``: parameters and forward FLOPs per branch.

FLOPs are counted from the layers' static shapes: 2 x multiply-accumulates of
every convolution, transposed convolution and dense layer (biases added);
BatchNorm, ReLU, pooling, unpooling and gating are elementwise and not
counted (they are under 1% here). The Teacher is the encoder plus the
attention decoders, the Student the encoder plus the deconvolution heads:
each counts the shared encoder once.
"""

import argparse
import json

from keras_sdmtcnn import cli


def layer_flops(layer):
    """Forward FLOPs of one layer for a batch of 1 (0 for uncounted layers)."""
    import keras

    if isinstance(layer, keras.layers.Conv2DTranspose):
        _, h, w, cin = layer.input.shape
        kh, kw = layer.kernel_size
        cout = layer.filters
        return 2 * h * w * cin * cout * kh * kw + (
            layer.output.shape[1] * layer.output.shape[2] * cout if layer.use_bias else 0
        )
    if isinstance(layer, keras.layers.Conv2D):
        _, h, w, cout = layer.output.shape
        cin = layer.input.shape[-1]
        kh, kw = layer.kernel_size
        return 2 * h * w * cout * kh * kw * cin // layer.groups + (h * w * cout if layer.use_bias else 0)
    if isinstance(layer, keras.layers.Dense):
        return 2 * layer.input.shape[-1] * layer.units
    return 0


def count_flops(model):
    """Forward FLOPs of a functional model with a static input size, batch 1."""
    shape = model.inputs[0].shape
    if any(s is None for s in shape[1:]):
        raise ValueError(
            f"FLOPs need a fixed input size, the model takes {tuple(shape)}: "
            "build it with image_size=(height, width)."
        )
    return sum(layer_flops(layer) for layer in model.layers)


def model_size(model):
    """Parameters and FLOPs of the full model, the Teacher and the Student."""
    out = {}
    for name, sub in (("full", model), ("teacher", model.teacher_model()),
                      ("student", model.student_model())):
        out[name] = {"params": int(sub.count_params()), "flops": int(count_flops(sub))}
    out["student_flops_share"] = out["student"]["flops"] / out["teacher"]["flops"]
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m keras_sdmtcnn.model_size",
        description="Parameters and forward FLOPs of the Teacher and the Student.",
    )
    parser.add_argument("--tasks", default="semantic,depth,normal")
    parser.add_argument("--num-classes", type=int, default=13)
    parser.add_argument("--height", type=int, default=288)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--width-multiplier", type=float, default=1.0)
    parser.add_argument("--decoder", default="segnet", choices=("segnet", "unet"))
    parser.add_argument("--no-attention", action="store_true")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args(argv)
    from keras_sdmtcnn.errors import UserError
    from keras_sdmtcnn.model import SDMTCNN

    try:
        model = SDMTCNN(
            args.tasks.split(","), num_classes=args.num_classes,
            image_size=(args.height, args.width), width_multiplier=args.width_multiplier,
            decoder=args.decoder, attention=not args.no_attention,
        )
    except ValueError as e:
        raise UserError(str(e)) from None
    size = model_size(model)
    if args.json:
        print(json.dumps(size, indent=2))
        return
    print(f"{args.tasks} at {args.height}x{args.width}, width x{args.width_multiplier}, "
          f"{args.decoder}{'' if not args.no_attention else ' without attention'}")
    print(f"{'branch':<8} {'params':>14} {'GFLOPs':>10}")
    for name in ("full", "teacher", "student"):
        print(f"{name:<8} {size[name]['params']:>14,} {size[name]['flops'] / 1e9:>10.1f}")
    print(f"Student / Teacher FLOPs: {size['student_flops_share']:.1%}")


if __name__ == "__main__":
    cli.run(main)
