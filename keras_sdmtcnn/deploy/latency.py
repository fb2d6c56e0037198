"""TFLite (and other runtimes') latency of the Teacher and the Student, batch 1.

Builds an SD-MTCNN at the given size (weights do not change float latency),
converts each branch to a builtins-only ``.tflite`` through the same serving
graph as ``export``, and times one image (batch 1) with the LiteRT
interpreter at 1 and 2 threads: the median of ``--runs`` calls after warm-up.
``--quantize int8`` calibrates on random images (fine for timing, not for
accuracy: export a trained run for that).
"""

import os
import tempfile

import numpy as np

from keras_sdmtcnn.tasks import BRANCHES


def measure(tasks, num_classes, size, width_multiplier=1.0, quantizations=("none",),
            threads=(1, 2), runs=10, model=None, other_runtimes=False):
    """Latency rows ``{branch, runtime, quantize, threads, ms, mb}`` of each branch.

    ``other_runtimes`` adds Keras (a ``tf.function``), the SavedModel and
    ONNX Runtime (1 and 2 threads) beside TFLite.
    """
    import tensorflow as tf

    from keras_sdmtcnn.deploy.onnx import convert_to_onnx
    from keras_sdmtcnn.deploy.runtime import latency_ms, load_exported, median_seconds
    from keras_sdmtcnn.deploy.serving import output_specs, serving_function, write_saved_model
    from keras_sdmtcnn.deploy.tflite import convert_saved_model
    from keras_sdmtcnn.io import atomic_write_json
    from keras_sdmtcnn.models.sdmtcnn import SDMTCNN

    if model is None:
        model = SDMTCNN(tasks, num_classes=num_classes, image_size=size,
                        width_multiplier=width_multiplier)
    results = []
    rng = np.random.default_rng(0)
    calibration = [rng.integers(0, 256, (1, *size, 3)).astype(np.uint8) for _ in range(8)]
    for branch in BRANCHES:
        serve, spec, tasks = serving_function(model, branch, size, "uint8")
        serve = tf.function(serve, input_signature=[spec])
        reference = serve(calibration[0])
        with tempfile.TemporaryDirectory() as folder:
            write_saved_model(model, serve, os.path.join(folder, "sm"))
            meta = {
                "branch": branch, "tasks": list(model.tasks),
                "input": {"name": "image", "shape": [1, *size, 3], "dtype": "uint8"},
                "outputs": output_specs({k: v.numpy() for k, v in reference.items()}, tasks),
            }
            atomic_write_json(os.path.join(folder, "metadata.json"), meta)
            if other_runtimes:
                seconds = median_seconds(lambda: serve(calibration[0]), runs)
                results.append({"branch": branch, "runtime": "keras", "quantize": "none",
                                "threads": 0, "ms": 1000 * seconds})
                saved = load_exported(os.path.join(folder, "sm"))
                results.append({"branch": branch, "runtime": "saved_model", "quantize": "none",
                                "threads": 0, "ms": latency_ms(saved, runs=runs)})
                onnx_path = os.path.join(folder, "model.onnx")
                convert_to_onnx(serve, spec, onnx_path)
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


def student_over_teacher(results, quantizations, threads=(1, 2)):
    """Lines ``Student / Teacher (q, n thread(s)): x%`` of TFLite rows."""
    lines = []
    for n in threads:
        for q in quantizations:
            ms = {r["branch"]: r["ms"] for r in results if r["threads"] == n
                  and r["quantize"] == q and r["runtime"] == "tflite"}
            if "teacher" in ms and "student" in ms:
                lines.append(f"Student / Teacher ({q}, {n} thread(s)): "
                             f"{ms['student'] / ms['teacher']:.1%}")
    return lines


def measure_recipe(recipe, quantizations=("none",), runs=10, other_runtimes=False):
    """:func:`measure` on the model a recipe builds (its tasks, size and widths)."""
    from keras_sdmtcnn.data.formats import format_defaults
    from keras_sdmtcnn.training.builders import build_model

    classes, ignore, _ = format_defaults(recipe.data)
    model = build_model(recipe, classes, ignore)
    return measure(list(recipe.data.tasks), classes, tuple(recipe.data.image_size),
                   quantizations=quantizations, runs=runs, model=model,
                   other_runtimes=other_runtimes)
