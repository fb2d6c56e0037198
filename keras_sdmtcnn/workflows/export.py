"""Shipping a branch as SavedModel, TFLite or ONNX: what ``python -m keras_sdmtcnn.export`` calls.

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

import os
import shutil
import sys

from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.io import left_behind, temp_dir_beside
from keras_sdmtcnn.runs.rundir import RunDir
from keras_sdmtcnn.workflows.evaluate import check_image_size

FORMATS = {
    "saved_model": ("none",),
    "tflite": ("none", "fp16", "dynamic_int8", "int8"),
    "onnx": ("none",),
}


def check_choice(branch, fmt, quantize):
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
    from keras_sdmtcnn.data.datasets import build_datasets

    datasets, info = build_datasets(recipe, verbose=False, splits=(split,), one_pass=True)
    images = []
    for x, _ in datasets[split]:
        images.extend(list(x.numpy()))
        if len(images) >= count:
            break
    return images[:count], info


def export(source, branch="student", fmt="tflite", quantize="none", out_dir=None,
           recipe_path=None, overrides=(), name=None, input_dtype="uint8",
           parity_samples=8, calibration_samples=32, verbose=1):
    """Exports one branch in one format; returns the path of the export folder."""
    return export_variants(source, branch, [(fmt, quantize)], out_dir, recipe_path, overrides,
                           name, input_dtype, parity_samples, calibration_samples, verbose)[0]


def export_variants(source, branch="student", variants=(("tflite", "none"),), out_dir=None,
                    recipe_path=None, overrides=(), name=None, input_dtype="uint8",
                    parity_samples=8, calibration_samples=32, verbose=1):
    """Exports one branch in several ``(format, quantize)`` variants; returns their folders.

    The model, the recipe, the serving graph and the parity samples are
    prepared once for all variants.
    """
    import tensorflow as tf

    from keras_sdmtcnn.config import load_recipe
    from keras_sdmtcnn.data.preprocessing import to_raw_pixels
    from keras_sdmtcnn.deploy.serving import serving_function
    from keras_sdmtcnn.training.saving import in_float32, load_model
    from keras_sdmtcnn.training.trainer import compute_policy

    check_arguments(branch, variants, input_dtype, parity_samples, calibration_samples)
    model_file, recipe_file = RunDir.resolve(source, recipe_path)
    recipe = load_recipe(recipe_file, overrides)
    trained = load_model(model_file)
    # Exports compute in float32 (then fp16 or int8 if asked), whatever the
    # run trained in; their parity is checked against this float32 model.
    model = in_float32(trained)
    check_image_size(model, recipe, model_file)
    norm = recipe.data.image_normalization
    serve, spec, tasks = serving_function(model, branch, tuple(recipe.data.image_size),
                                          input_dtype, norm)
    serve = tf.function(serve, input_signature=[spec])
    # The same graph on float pixels: the parity check's measure of the model's own
    # sensitivity to rounding (deploy/parity.py).
    nudged_fn, nudged_spec, _ = serving_function(model, branch, tuple(recipe.data.image_size),
                                                 "float32", norm)
    nudged = tf.function(nudged_fn, input_signature=[nudged_spec])
    images, info = _samples(recipe, "val", parity_samples)
    raw = [to_raw_pixels(x, norm, input_dtype) for x in images]
    calibration = None
    if any(quantize == "int8" for _, quantize in variants):
        train_images, _ = _samples(recipe, "train", calibration_samples)
        calibration = [to_raw_pixels(x, norm, input_dtype)[None] for x in train_images]
    out_dir = out_dir or os.path.join("saved_models", name or recipe.name)
    remove_left_behind(out_dir)
    source = _Source(model, model_file, recipe, serve, spec, tasks, raw, calibration, info,
                     input_dtype, out_dir)
    source.nudged = nudged
    source.trained_precision = compute_policy(trained)
    try:
        return [_write_variant(source, branch, fmt, quantize, out_dir, verbose)
                for fmt, quantize in variants]
    finally:
        source.close()


def check_arguments(branch, variants, input_dtype, parity_samples, calibration_samples):
    """Refuses what an export cannot do, before anything is loaded (one ``UserError``)."""
    from keras_sdmtcnn.deploy.onnx import require

    for fmt, quantize in variants:
        check_choice(branch, fmt, quantize)
    if input_dtype not in ("uint8", "float32"):
        raise UserError(f"--input-dtype must be uint8 or float32, got {input_dtype!r}.")
    for option, value in (("--samples", parity_samples),
                          ("calibration samples", calibration_samples)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"{option} must be a whole number >= 1 (images of the validation "
                            f"split the export is checked on), got {value!r}.")
    if len(set(variants)) != len(variants):
        raise UserError(f"--format and --quantize name the same export twice: {variants}.")
    # The optional packages a format needs, before the model is loaded.
    if any(fmt == "onnx" for fmt, _ in variants):
        require("tf2onnx")
        require("onnxruntime")  # the parity check runs the exported file


def remove_left_behind(out_dir):
    """Removes the hidden temporary folders of exports into ``out_dir`` that were killed."""
    if not os.path.isdir(out_dir):
        return
    for name in os.listdir(out_dir):
        if name.startswith(".") and (".tmp" in name or ".old-" in name) and left_behind(name):
            shutil.rmtree(os.path.join(out_dir, name), ignore_errors=True)


class _Source:
    """What every variant of one export shares (prepared once).

    The SavedModel of the serving graph, which the ``saved_model`` variant
    copies and every TFLite variant converts from, is written on first use
    (about 3 s at the demo's size) into a hidden folder of ``out_dir`` that
    ``close`` removes.
    """

    def __init__(self, model, model_file, recipe, serve, spec, tasks, raw, calibration, info,
                 input_dtype, out_dir):
        self.model, self.model_file, self.recipe = model, model_file, recipe
        self.serve, self.spec, self.tasks = serve, spec, tasks
        self.raw, self.calibration, self.info = raw, calibration, info
        self.input_dtype = input_dtype
        self._out_dir, self._shared = out_dir, None

    def noise(self):
        """The Keras model's own sensitivity on the parity images (computed once)."""
        from keras_sdmtcnn.deploy.parity import sensitivity

        if getattr(self, "_noise", None) is None:
            self._noise = sensitivity(self.nudged, self.raw)
        return self._noise

    def saved_model(self):
        """The path of the shared SavedModel folder (written the first time)."""
        from keras_sdmtcnn.deploy.serving import write_saved_model

        if self._shared is None:
            shared = temp_dir_beside(self._out_dir, ".saved_model.tmp-")
            try:
                write_saved_model(self.model, self.serve, os.path.join(shared, "saved_model"))
            except BaseException:
                shutil.rmtree(shared, ignore_errors=True)
                raise
            self._shared = shared
        return os.path.join(self._shared, "saved_model")

    def close(self):
        if self._shared is not None:
            shutil.rmtree(self._shared, ignore_errors=True)
            self._shared = None


def _write_variant(source, branch, fmt, quantize, out_dir, verbose):
    """Writes one export folder (atomically) after its parity check; returns its path."""
    label = f"{branch}-{fmt}" + ("" if quantize == "none" else f"-{quantize}")
    final = os.path.join(out_dir, label)
    os.makedirs(out_dir, exist_ok=True)
    tmp = temp_dir_beside(out_dir, f".{label}.tmp-")
    try:
        artefact, extra = _convert(source, fmt, quantize, tmp)
        metadata = {"branch": branch, "format": fmt, "quantize": quantize, "file": artefact,
                    **_description(source), **extra}
        report = _check_parity(source, os.path.join(tmp, artefact), metadata, label)
        _put_in_place(tmp, final, out_dir, label)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    if verbose:
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in report["max_abs_diff"].items())
        agreement = report.get("class_agreement")
        against = ("" if source.trained_precision == "float32" else
                   f" against the {source.trained_precision}-trained model in float32")
        print(f"{final}/{artefact}: parity on {report['samples']} val samples{against}: max "
              f"|diff| {diffs}"
              + (f"; classes agree on {agreement:.3%}" if agreement is not None else ""))
    return final


def _convert(source, fmt, quantize, folder):
    """Writes the model file into ``folder``; returns ``(its name, metadata of the format)``."""
    from keras_sdmtcnn.deploy.onnx import ONNX_OPSET, convert_to_onnx
    from keras_sdmtcnn.deploy.tflite import convert_saved_model, gpu_compatibility, tflite_ops

    if fmt == "tflite":
        calibration = source.calibration if quantize == "int8" else None
        flat = convert_saved_model(source.saved_model(), quantize, calibration)
        with open(os.path.join(folder, "model.tflite"), "wb") as f:
            f.write(flat)
        gpu = gpu_compatibility(flat)
        if gpu is not None and not gpu["compatible"]:
            named = "; ".join(f"{o['op']} ({o['reason']})" for o in gpu["incompatible_ops"])
            print(f"warning: LiteRT's analyzer finds ops in the {quantize} .tflite that its GPU "
                  f"delegate cannot run (on a phone they fall back to the CPU): "
                  f"{named or 'see its report'}.",
                  file=sys.stderr)
        return "model.tflite", {"tflite_ops": sorted(tflite_ops(flat)), "gpu_compatibility": gpu}
    if fmt == "onnx":
        convert_to_onnx(source.serve, source.spec, os.path.join(folder, "model.onnx"))
        return "model.onnx", {"onnx_opset": ONNX_OPSET}
    shutil.copytree(source.saved_model(), os.path.join(folder, "saved_model"))
    return "saved_model", {}


def _description(source):
    """What every ``metadata.json`` of one export says: input, outputs, classes, recipe."""
    from keras_sdmtcnn.config import recipe_to_dict
    from keras_sdmtcnn.deploy.serving import output_specs

    recipe, info = source.recipe, source.info
    reference = {k: v.numpy() for k, v in source.serve(source.raw[0][None]).items()}
    imagenet = recipe.data.image_normalization == "imagenet"
    return {
        "input": {
            "name": "image", "shape": [1, *recipe.data.image_size, 3],
            "dtype": source.input_dtype,
            "scaling": "raw RGB pixels in [0, 255]; the graph divides by 255"
                       + (" and standardises with the ImageNet mean/std" if imagenet else ""),
        },
        "outputs": output_specs(reference, source.tasks),
        "tasks": source.tasks,
        "class_names": list(info.class_names) if info.class_names else None,
        "num_classes": info.num_classes,
        "source_model": os.path.abspath(source.model_file),
        "trained_precision": source.trained_precision,
        "parity_reference": "the source model computing in float32",
        "recipe": recipe_to_dict(recipe),
    }


def _check_parity(source, path, metadata, label):
    """Runs the file against the Keras model; records the report; a float32 failure stops."""
    from keras_sdmtcnn.deploy.parity import failures, parity
    from keras_sdmtcnn.deploy.runtime import load_exported
    from keras_sdmtcnn.io import atomic_write_json

    folder = os.path.dirname(path)
    atomic_write_json(os.path.join(folder, "metadata.json"), metadata)
    runtime = load_exported(path, in_progress=True)
    report = parity(runtime, source.serve, source.raw, source.tasks, source.noise())
    atomic_write_json(os.path.join(folder, "metadata.json"), {**metadata, "parity": report})
    failed = failures(report) if metadata["quantize"] == "none" else []
    if failed:
        raise UserError(
            f"Parity check failed for {label} against the Keras model on "
            f"{report['samples']} validation images: {'; '.join(failed)}. Nothing was "
            "written; the converter changed what the model computes (see "
            "docs/deploying.md, Parity).")
    return report


def _put_in_place(tmp, final, out_dir, label):
    """The finished folder under its name; an older export of that name goes."""
    if os.path.exists(final):
        old = temp_dir_beside(out_dir, f".{label}.old-")
        os.replace(final, os.path.join(old, label))
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
