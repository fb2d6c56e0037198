"""``python -m keras_sdmtcnn.latency``: TFLite latency of the Teacher and the Student.

Builds an SD-MTCNN at the given size (weights do not change float latency),
converts each branch to a builtins-only ``.tflite`` through the same serving
graph as ``export``, and times one image (batch 1) with the LiteRT
interpreter at 1 and 2 threads: the median of ``--runs`` calls after warm-up.
``--quantize int8`` calibrates on random images (fine for timing, not for
accuracy: export a trained run for that).
"""

import argparse
import json
import os
import tempfile

import numpy as np

from keras_sdmtcnn import cli


def measure(tasks, num_classes, size, width_multiplier=1.0, quantizations=("none",),
            threads=(1, 2), runs=10, model=None, other_runtimes=False):
    """Latency rows ``{branch, runtime, quantize, threads, ms, mb}`` of each branch.

    ``other_runtimes`` adds Keras (a ``tf.function``), the SavedModel and
    ONNX Runtime (1 and 2 threads) beside TFLite.
    """
    import tensorflow as tf

    from keras_sdmtcnn.io import atomic_write_json
    from keras_sdmtcnn.model import SDMTCNN
    from keras_sdmtcnn.runtime import latency_ms, load_exported, median_seconds
    from keras_sdmtcnn.serving import output_specs, serving_function, write_saved_model
    from keras_sdmtcnn.tflite import convert_saved_model

    if model is None:
        model = SDMTCNN(tasks, num_classes=num_classes, image_size=size,
                        width_multiplier=width_multiplier)
    results = []
    rng = np.random.default_rng(0)
    calibration = [rng.integers(0, 256, (1, *size, 3)).astype(np.uint8) for _ in range(8)]
    for branch in ("teacher", "student"):
        serve, spec, _ = serving_function(model, branch, size, "uint8")
        serve = tf.function(serve, input_signature=[spec])
        reference = serve(calibration[0])
        with tempfile.TemporaryDirectory() as folder:
            write_saved_model(model, serve, os.path.join(folder, "sm"))
            meta = {
                "branch": branch, "tasks": list(model.tasks),
                "input": {"name": "image", "shape": [1, *size, 3], "dtype": "uint8"},
                "outputs": output_specs({k: v.numpy() for k, v in reference.items()}),
            }
            atomic_write_json(os.path.join(folder, "metadata.json"), meta)
            if other_runtimes:
                seconds = median_seconds(lambda: serve(calibration[0]), runs)
                results.append({"branch": branch, "runtime": "keras", "quantize": "none",
                                "threads": 0, "ms": 1000 * seconds})
                saved = load_exported(os.path.join(folder, "sm"))
                results.append({"branch": branch, "runtime": "saved_model", "quantize": "none",
                                "threads": 0, "ms": latency_ms(saved, runs=runs)})
                import tf2onnx

                proto, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=17)
                onnx_path = os.path.join(folder, "model.onnx")
                with open(onnx_path, "wb") as f:
                    f.write(proto.SerializeToString())
                for n in threads:
                    results.append({"branch": branch, "runtime": "onnxruntime",
                                    "quantize": "none", "threads": n,
                                    "ms": latency_ms(load_exported(onnx_path, threads=n),
                                                     runs=runs)})
            for quantize in quantizations:
                flat = convert_saved_model(os.path.join(folder, "sm"), quantize, calibration)
                path = os.path.join(folder, f"{branch}-{quantize}.tflite")
                with open(path, "wb") as f:
                    f.write(flat)
                for n in threads:
                    ms = latency_ms(load_exported(path, threads=n), runs=runs)
                    results.append({"branch": branch, "runtime": "tflite",
                                    "quantize": quantize, "threads": n,
                                    "ms": ms, "mb": len(flat) / 2**20})
                    print(f"{branch:<8} {quantize:<13} {n} thread(s): {ms:9.1f} ms "
                          f"({len(flat) / 2**20:.1f} MB)", flush=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m keras_sdmtcnn.latency",
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
    args = parser.parse_args(argv)
    model = None
    tasks, size, classes = args.tasks.split(","), (args.height, args.width), args.num_classes
    if args.recipe:
        from keras_sdmtcnn.builders import build_model
        from keras_sdmtcnn.data.datasets import format_defaults
        from keras_sdmtcnn.recipes import load_recipe

        recipe = load_recipe(args.recipe, args.set)
        classes, ignore, _ = format_defaults(recipe.data)
        model = build_model(recipe, classes, ignore)
        tasks, size = list(recipe.data.tasks), tuple(recipe.data.image_size)
    results = measure(tasks, classes, size, args.width_multiplier, args.quantize,
                      runs=args.runs, model=model, other_runtimes=args.all_runtimes)
    for n in (1, 2):
        for q in args.quantize:
            t = [r["ms"] for r in results if r["branch"] == "teacher" and r["threads"] == n
                 and r["quantize"] == q and r["runtime"] == "tflite"]
            s = [r["ms"] for r in results if r["branch"] == "student" and r["threads"] == n
                 and r["quantize"] == q and r["runtime"] == "tflite"]
            if t and s:
                print(f"Student / Teacher ({q}, {n} thread(s)): {s[0] / t[0]:.1%}")
    if args.out:
        from keras_sdmtcnn.io import atomic_write_json

        atomic_write_json(args.out, results)


if __name__ == "__main__":
    cli.run(main)
