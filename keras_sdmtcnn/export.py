"""``python -m keras_sdmtcnn.export RUN_DIR_OR_MODEL``: ship a branch as SavedModel, TFLite or ONNX.

::

    python -m keras_sdmtcnn.export runs/synthetic --branch student --format tflite \\
        --quantize none fp16 int8

Each export is a self-contained folder
``saved_models/<name>/<branch>-<format>[-<quantize>]/`` holding the model
(``model.tflite``, ``model.onnx`` or ``saved_model/``) and ``metadata.json``:
input name, shape, dtype and scaling; output names, shapes, dtypes and
meanings; class names; the resolved recipe; and the parity report.

Every export ends with a parity check on real samples of the recipe's
validation split: the exported file, run by its own runtime (LiteRT, ONNX
Runtime, TensorFlow), against the Keras model on the same pixels: the max
absolute difference of every output and, for segmentation, the share of
pixels whose class agrees. A float32 export must agree within 1e-4 and on
99.9% of pixels or it is not written; fp16 and int8 exports report their
figures (and ``evaluate`` measures their task metrics).

The folder is built under a temporary name and renamed when complete, so a
failed export leaves nothing behind in ``saved_models/``.
"""

import argparse
import json
import os
import shutil
import tempfile

import numpy as np

from keras_sdmtcnn import cli
from keras_sdmtcnn.errors import UserError

FORMATS = {
    "saved_model": ("none",),
    "tflite": ("none", "fp16", "dynamic_int8", "int8"),
    "onnx": ("none",),
}
MAX_ABS_DIFF = 1e-4
MIN_CLASS_AGREEMENT = 0.999
ONNX_OPSET = 17


def _check_choice(branch, fmt, quantize):
    if branch not in ("student", "teacher"):
        raise UserError(f"--branch must be student or teacher, got {branch!r}.")
    if fmt not in FORMATS:
        raise UserError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}.")
    if quantize not in FORMATS[fmt]:
        raise UserError(
            f"--quantize {quantize} is not supported for {fmt}; {fmt} supports: "
            f"{', '.join(FORMATS[fmt])}."
        )


def _samples(recipe, split, count):
    from keras_sdmtcnn.data import build_datasets

    datasets, info = build_datasets(recipe, verbose=False, splits=(split,), one_pass=True)
    images = []
    for x, _ in datasets[split]:
        images.extend(list(x.numpy()))
        if len(images) >= count:
            break
    return images[:count], info


def parity(runtime, serve, raw_images):
    """Compares an exported model with the Keras serving graph on raw images."""
    diffs, agree, total = {}, 0, 0
    for image in raw_images:
        batch = image[None]
        expected = {k: v.numpy() for k, v in serve(batch).items()}
        got = runtime(batch)
        for name, value in expected.items():
            if name == "semantic_classes":
                agree += int(np.sum(got[name] == value))
                total += value.size
                continue
            diff = float(np.max(np.abs(got[name].astype(np.float64) - value)))
            diffs[name] = max(diffs.get(name, 0.0), diff)
    report = {"samples": len(raw_images), "max_abs_diff": diffs}
    if total:
        report["class_agreement"] = agree / total
    return report


def export(source, branch="student", fmt="tflite", quantize="none", out_dir=None,
           recipe_path=None, overrides=(), name=None, input_dtype="uint8",
           parity_samples=8, calibration_samples=32, verbose=1):
    """Exports one branch in one format; returns the path of the export folder."""
    import keras
    import tensorflow as tf

    import keras_sdmtcnn.registry  # noqa: F401  (registers the classes)
    from keras_sdmtcnn.evaluate import resolve
    from keras_sdmtcnn.io import atomic_write_json
    from keras_sdmtcnn.recipes import load_recipe, recipe_to_dict
    from keras_sdmtcnn.runtime import load_exported
    from keras_sdmtcnn.serving import (output_specs, serving_function, to_raw_pixels,
                                       write_saved_model)
    from keras_sdmtcnn.tflite import convert_saved_model, tflite_ops

    _check_choice(branch, fmt, quantize)
    if input_dtype not in ("uint8", "float32"):
        raise UserError(f"--input-dtype must be uint8 or float32, got {input_dtype!r}.")
    model_file, recipe_file = resolve(source, recipe_path)
    recipe = load_recipe(recipe_file, overrides)
    model = keras.models.load_model(model_file)
    image_size = tuple(recipe.data.image_size)
    norm = recipe.data.image_normalization
    serve, spec, tasks = serving_function(model, branch, image_size, input_dtype, norm)
    serve = tf.function(serve, input_signature=[spec])

    images, info = _samples(recipe, "val", parity_samples)
    raw = [to_raw_pixels(x, norm, input_dtype) for x in images]
    calibration = None
    if quantize == "int8":
        train_images, _ = _samples(recipe, "train", calibration_samples)
        calibration = [to_raw_pixels(x, norm, input_dtype)[None] for x in train_images]

    name = name or recipe.name
    out_dir = out_dir or os.path.join("saved_models", name)
    label = f"{branch}-{fmt}" + ("" if quantize == "none" else f"-{quantize}")
    final = os.path.join(out_dir, label)
    os.makedirs(out_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{label}.tmp-", dir=out_dir)
    try:
        saved = os.path.join(tmp, "saved_model")
        write_saved_model(model, serve, saved)
        extra = {}
        if fmt == "tflite":
            flat = convert_saved_model(saved, quantize, calibration)
            with open(os.path.join(tmp, "model.tflite"), "wb") as f:
                f.write(flat)
            extra["tflite_ops"] = sorted(tflite_ops(flat))
            shutil.rmtree(saved)
            artefact = "model.tflite"
        elif fmt == "onnx":
            import tf2onnx

            proto, _ = tf2onnx.convert.from_function(
                serve, input_signature=[spec], opset=ONNX_OPSET
            )
            with open(os.path.join(tmp, "model.onnx"), "wb") as f:
                f.write(proto.SerializeToString())
            extra["onnx_opset"] = ONNX_OPSET
            shutil.rmtree(saved)
            artefact = "model.onnx"
        else:
            artefact = "saved_model"

        reference = {k: v.numpy() for k, v in serve(raw[0][None]).items()}
        metadata = {
            "branch": branch,
            "format": fmt,
            "quantize": quantize,
            "file": artefact,
            "input": {
                "name": "image", "shape": [1, *image_size, 3], "dtype": input_dtype,
                "scaling": "raw RGB pixels in [0, 255]; the graph divides by 255"
                           + (" and standardises with the ImageNet mean/std"
                              if norm == "imagenet" else ""),
            },
            "outputs": output_specs(reference),
            "tasks": tasks,
            "class_names": list(info.class_names) if info.class_names else None,
            "num_classes": info.num_classes,
            "source_model": os.path.abspath(model_file),
            "recipe": recipe_to_dict(recipe),
            **extra,
        }
        atomic_write_json(os.path.join(tmp, "metadata.json"), metadata)
        runtime = load_exported(os.path.join(tmp, artefact))
        report = parity(runtime, serve, raw)
        metadata["parity"] = report
        atomic_write_json(os.path.join(tmp, "metadata.json"), metadata)
        if quantize == "none":
            worst = max(report["max_abs_diff"].values(), default=0.0)
            agreement = report.get("class_agreement", 1.0)
            if worst > MAX_ABS_DIFF or agreement < MIN_CLASS_AGREEMENT:
                raise UserError(
                    f"Parity check failed for {label}: max abs difference {worst:.2e} "
                    f"(limit {MAX_ABS_DIFF}), class agreement {agreement:.4%} (limit "
                    f"{MIN_CLASS_AGREEMENT:.1%}). Nothing was written."
                )
        if os.path.exists(final):
            old = tempfile.mkdtemp(prefix=f".{label}.old-", dir=out_dir)
            os.replace(final, os.path.join(old, label))
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    if verbose:
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in report["max_abs_diff"].items())
        agreement = report.get("class_agreement")
        print(f"{final}/{artefact}: parity on {report['samples']} val samples: max |diff| "
              f"{diffs}" + (f"; classes agree on {agreement:.3%}" if agreement is not None else ""))
    return final


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m keras_sdmtcnn.export",
        description="Export the Student or Teacher as SavedModel, TFLite or ONNX.",
    )
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
    args = parser.parse_args(argv)
    for fmt in args.formats:
        for quantize in args.quantize:
            _check_choice(args.branch, fmt, quantize)
    for fmt in args.formats:
        for quantize in args.quantize:
            export(args.source, args.branch, fmt, quantize, args.out, args.recipe, args.set,
                   args.name, args.input_dtype, args.samples)


if __name__ == "__main__":
    cli.run(main)
