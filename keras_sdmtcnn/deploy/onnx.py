"""ONNX export of a serving function (through tf2onnx, an optional dependency)."""

from keras_sdmtcnn.errors import UserError

ONNX_OPSET = 17


def require(module):
    """Imports an optional export dependency, or says which extra installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(
            f"{module} is not installed: ONNX and LiteRT support is an optional extra; "
            'install it from the repository root with pip install -e ".[export]".') from None


def convert_to_onnx(serve, input_spec, path, opset=ONNX_OPSET):
    """Writes ``serve`` (a ``tf.function``) as an ONNX model at ``path``."""
    tf2onnx = require("tf2onnx")
    proto, _ = tf2onnx.convert.from_function(serve, input_signature=[input_spec], opset=opset)
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())
