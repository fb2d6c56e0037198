"""Running exported files: TFLite/LiteRT, ONNX Runtime and SavedModel, one interface.

:func:`load_exported` returns a :class:`ExportedModel` whose ``__call__``
takes one ``(1, H, W, 3)`` image (the export's input dtype) and returns the
dict of named outputs; its ``metadata`` is the export's ``metadata.json``.

A ``.tflite`` file runs through one of LiteRT's two APIs (``runtime``):
``interpreter`` (the ``Interpreter``, LiteRT 1.x's API, CPU only in 2.x) or
``compiled_model`` (LiteRT 2.x's ``CompiledModel``, the API Android apps use
for CPU, GPU and NPU; here on the CPU).
"""

import os
import time

import numpy as np

from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.io import read_json, unreadable

SUFFIXES = {".tflite": "tflite", ".onnx": "onnx"}
# LiteRT's APIs for a .tflite file (the first is the default).
TFLITE_RUNTIMES = ("interpreter", "compiled_model")
# The first ai-edge-litert with the CompiledModel API in Python.
COMPILED_MODEL_WHEEL = "ai-edge-litert>=2.0"


def export_format(path):
    """``tflite``, ``onnx`` or ``saved_model`` from a path, or ``None``."""
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "saved_model.pb")):
        return "saved_model"
    return SUFFIXES.get(os.path.splitext(path)[1])


REEXPORT = "export it again (python -m keras_sdmtcnn.export RUN_DIR ...)"
# What a metadata.json must hold for the runtimes and evaluate to use it.
_METADATA_KEYS = ("input", "outputs")


def find_metadata(path):
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    for candidate in (os.path.join(folder, "metadata.json"),
                      os.path.join(os.path.dirname(folder), "metadata.json")):
        if os.path.exists(candidate):
            metadata = read_json(candidate, REEXPORT)
            if not isinstance(metadata, dict) or any(k not in metadata for k in _METADATA_KEYS):
                raise unreadable(candidate, "export metadata (it lacks "
                                 f"{', '.join(_METADATA_KEYS)})", REEXPORT)
            return metadata
    raise UserError(f"No metadata.json beside {path}: was it written by keras_sdmtcnn.export?")


def _in_temporary_folder(path):
    """Whether ``path`` lies in an export's hidden temporary folder (a killed export's)."""
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
    return any(p.startswith(".") and ".tmp" in p for p in parts)


class ExportedModel:
    """An exported file run by its own runtime; ``in_progress``: the export's own parity check."""

    def __init__(self, path, threads=None, in_progress=False, runtime="interpreter"):
        self.path = path
        self.format = export_format(path)
        if runtime not in TFLITE_RUNTIMES:
            raise UserError(f"--runtime must be one of {', '.join(TFLITE_RUNTIMES)}, got "
                            f"{runtime!r}.")
        if runtime != "interpreter" and self.format != "tflite":
            raise UserError(f"--runtime {runtime} runs .tflite files; {path} is "
                            f"{self.format or 'not an exported model'}.")
        self.runtime = runtime if self.format == "tflite" else self.format
        if self.format is None:
            raise UserError(
                f"{path} is not an exported model (.tflite, .onnx or a SavedModel folder)."
            )
        if _in_temporary_folder(path) and not in_progress:
            raise UserError(
                f"{path} lies in a temporary folder of an export that did not finish (its "
                f"parity was never checked): {REEXPORT}.")
        self.metadata = find_metadata(path)
        self.names = [o["name"] for o in self.metadata["outputs"]]
        try:
            self._load(path, threads)
        except UserError:
            raise
        except Exception as e:  # each runtime has its own errors for a garbled file
            raise unreadable(path, f"a {self.format} model", REEXPORT, e) from None

    def _load(self, path, threads):
        if self.runtime == "compiled_model":
            self._load_compiled_model(path)
        elif self.format == "tflite":
            try:
                from ai_edge_litert.interpreter import Interpreter
            except ImportError:  # the TF-bundled interpreter is the same runtime
                from tensorflow.lite.python.interpreter import Interpreter
            self._interpreter = Interpreter(model_path=path, num_threads=threads)
            signatures = list(self._interpreter.get_signature_list())
            self._runner = self._interpreter.get_signature_runner(signatures[0])
        elif self.format == "onnx":
            import onnxruntime as ort

            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            self._session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            self._input = self._session.get_inputs()[0].name
        else:
            import tensorflow as tf

            loaded = tf.saved_model.load(path)
            self._fn = loaded.signatures.get("serve") or next(iter(loaded.signatures.values()))
            self._loaded = loaded  # keep the variables alive

    def _load_compiled_model(self, path):
        try:
            from ai_edge_litert.compiled_model import CompiledModel, HardwareAccelerator
        except ImportError:
            raise UserError(
                "--runtime compiled_model needs LiteRT's CompiledModel API, which comes with "
                f"{COMPILED_MODEL_WHEEL}: install it from the repository root with pip "
                'install -e ".[export]".') from None
        model = CompiledModel.from_file(path, hardware_accel=HardwareAccelerator.CPU)
        key = next(iter(model.get_signature_list()))
        signature = model.get_signature_list()[key]
        self._compiled, self._key = model, key
        self._inputs = {n: model.create_input_buffer_by_name(key, n) for n in signature["inputs"]}
        self._outputs = {n: model.create_output_buffer_by_name(key, n)
                         for n in signature["outputs"]}
        self._output_details = model.get_output_tensor_details(key)

    def _run_compiled_model(self, image):
        (buffer,) = self._inputs.values()
        buffer.write(np.ascontiguousarray(image))
        self._compiled.run_by_name(self._key, self._inputs, self._outputs)
        out = {}
        for name, buffer in self._outputs.items():
            shape = self._output_details[name]["shape"]
            out[name] = buffer.read(int(np.prod(shape)), np.dtype(
                self._output_details[name]["dtype"])).reshape(shape)
        return out

    @property
    def input_dtype(self):
        return self.metadata["input"]["dtype"]

    @property
    def input_shape(self):
        return tuple(self.metadata["input"]["shape"])

    def __call__(self, image):
        image = np.asarray(image, dtype=self.input_dtype)
        if image.shape != self.input_shape:
            raise UserError(
                f"{self.path} takes an image of shape {self.input_shape}, got {image.shape}."
            )
        if self.runtime == "compiled_model":
            out = self._run_compiled_model(image)
        elif self.format == "tflite":
            out = self._runner(image=image)
        elif self.format == "onnx":
            values = self._session.run(self.names, {self._input: image})
            out = dict(zip(self.names, values))
        else:
            out = {k: v.numpy() for k, v in self._fn(image=image).items()}
        return {name: np.asarray(out[name]) for name in self.names}


def load_exported(path, threads=None, in_progress=False, runtime="interpreter"):
    """The exported file at ``path``, ready to run (``runtime``: see the module docstring)."""
    return ExportedModel(path, threads, in_progress, runtime)


def median_seconds(fn, runs=10, warmup=2):
    """Median wall-clock seconds of ``fn()`` over ``runs`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def latency_ms(model, runs=10, warmup=2):
    """Median milliseconds of one call on a random image (batch 1)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, model.input_shape).astype(model.input_dtype)
    return 1000 * median_seconds(lambda: model(image), runs, warmup)
