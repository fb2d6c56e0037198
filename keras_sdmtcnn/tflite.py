"""TFLite conversion with builtin ops only, and inspection of the converted ops.

The conversion goes through a SavedModel written by
``keras.export.ExportArchive`` (which freezes the Keras 3 variables), and
``supported_ops`` is restricted to TFLite builtins, so an unsupported op fails
the conversion instead of silently pulling in Flex ops.
"""

import tempfile

import tensorflow as tf

from keras_sdmtcnn.errors import UserError


def convert_to_tflite(model, input_shape, optimizations=()):
    """Converts ``model`` (one image input) to a TFLite flatbuffer (bytes).

    Args:
        model: a Keras model.
        input_shape: the full input shape, batch included, e.g. ``(1, 288, 384, 3)``.
    """
    import keras

    with tempfile.TemporaryDirectory() as folder:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint(
            "serve",
            lambda x: model(x, training=False),
            input_signature=[tf.TensorSpec(tuple(input_shape), tf.float32)],
        )
        archive.write_out(folder, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(folder)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converter.optimizations = list(optimizations)
        flat = converter.convert()
    non_builtin = sorted(op for op in tflite_ops(flat) if op.startswith("Flex") or op == "CUSTOM")
    if non_builtin:
        raise UserError(f"The TFLite model uses non-builtin ops {non_builtin}.")
    return flat


def tflite_ops(flat):
    """The set of operator names in a TFLite flatbuffer."""
    interpreter = tf.lite.Interpreter(model_content=flat)
    return {op["op_name"] for op in interpreter._get_ops_details()}
