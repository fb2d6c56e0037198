"""TFLite conversion with builtin ops only, and inspection of the converted ops.

The conversion goes through a SavedModel written by
``keras.export.ExportArchive`` (which freezes the Keras 3 variables), and
``supported_ops`` is restricted to TFLite builtins, so an unsupported op fails
the conversion instead of silently pulling in Flex ops.
"""

import tempfile

import tensorflow as tf

from keras_sdmtcnn.errors import UserError

QUANTIZATIONS = ("none", "fp16", "dynamic_int8", "int8")


def convert_saved_model(folder, quantize="none", representative_data=None):
    """Converts a SavedModel folder to TFLite bytes, builtin ops only (checked).

    ``quantize``: ``none`` (float32), ``fp16`` (float16 weights),
    ``dynamic_int8`` (int8 weights, dynamic-range activations) or ``int8``
    (weights and activations, calibrated on ``representative_data``: an
    iterable of input arrays; ops without an int8 kernel stay float builtins).
    """
    if quantize not in QUANTIZATIONS:
        raise UserError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantize!r}.")
    converter = tf.lite.TFLiteConverter.from_saved_model(folder)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        if representative_data is None:
            raise UserError("int8 quantization needs representative data (the recipe's training images).")
        samples = list(representative_data)
        converter.representative_dataset = lambda: ([s] for s in samples)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS,
        ]
    flat = converter.convert()
    non_builtin = sorted(op for op in tflite_ops(flat) if op.startswith("Flex") or op == "CUSTOM")
    if non_builtin:
        raise UserError(f"The TFLite model uses non-builtin ops {non_builtin}: refusing to write it.")
    return flat


def convert_to_tflite(model, input_shape):
    """Converts ``model`` (one image input) to a TFLite flatbuffer (bytes).

    Args:
        model: a Keras model.
        input_shape: the full input shape, batch included, e.g. ``(1, 288, 384, 3)``.
    """
    from keras_sdmtcnn.deploy.serving import write_saved_model

    with tempfile.TemporaryDirectory() as folder:
        write_saved_model(model, lambda x: model(x, training=False), folder,
                          [tf.TensorSpec(tuple(input_shape), tf.float32)])
        return convert_saved_model(folder)


def tflite_ops(flat):
    """The set of operator names in a TFLite flatbuffer."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # the interpreter bundled with TF is the same runtime
        Interpreter = tf.lite.Interpreter
    interpreter = Interpreter(model_content=flat)
    return {op["op_name"] for op in interpreter._get_ops_details()}


def gpu_compatibility(flat):
    """LiteRT's own analyzer on a ``.tflite`` flatbuffer: can the GPU delegate run every op?

    ``{"compatible": bool, "incompatible_ops": [{"op", "reason"}], "analyzer"}``,
    read from the report of LiteRT's model analyzer (the one behind
    ``tf.lite.experimental.Analyzer.analyze(gpu_compatibility=True)``), which
    marks each op the GPU delegate cannot take with ``GPU COMPATIBILITY
    WARNING``. ``None`` when the analyzer is not installed.
    """
    try:
        from ai_edge_litert import _pywrap_analyzer_wrapper as analyzer
    except ImportError:
        return None
    report = analyzer.ModelAnalyzer(bytes(flat), False, True)
    return parse_gpu_report(report)


def parse_gpu_report(report):
    """The GPU verdict of an analyzer ``report`` (:func:`gpu_compatibility`)."""
    import re
    from importlib.metadata import PackageNotFoundError, version

    marker = "GPU COMPATIBILITY WARNING:"
    ops = []
    for line in report.splitlines():
        found = re.search(r"Op#\d+ (\w+)\(", line)
        if marker in line and found:
            ops.append({"op": found.group(1), "reason": line.split(marker, 1)[1].strip()})
    try:
        wheel = f"ai-edge-litert {version('ai-edge-litert')}"
    except PackageNotFoundError:
        wheel = "ai-edge-litert"
    return {"compatible": not ops and marker not in report, "incompatible_ops": ops,
            "analyzer": f"LiteRT model analyzer ({wheel})"}
