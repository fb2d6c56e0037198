"""The serving graph that every export wraps: what an app has in, named tasks out.

Input: one image tensor ``image`` of fixed shape ``(1, H, W, 3)``, either
``uint8`` or ``float32``, with pixel values in ``[0, 255]`` either way. The
graph divides by 255 (and standardises with the ImageNet mean and std when
the recipe's ``data.image_normalization`` is ``imagenet``), so an app passes
raw pixels.

Outputs, one per task, of the chosen branch (Teacher or Student):

- ``semantic_logits`` float32 ``(1, H, W, C)`` and ``semantic_classes`` int32
  ``(1, H, W)`` (the argmax);
- ``depth`` float32 ``(1, H, W, 1)`` in the data's units (metres for
  Taskonomy, NYUv2 and the built-in scenes; inverse depth for CityScapes);
- ``normal`` float32 ``(1, H, W, 3)`` unit vectors, camera frame;
- ``keypoints``, ``edges`` float32 ``(1, H, W, 1)``.
"""

import tensorflow as tf

from keras_sdmtcnn.data.preprocessing import ImagePreprocessing
from keras_sdmtcnn.tasks import get_task, output_name


def branch_of(model, branch):
    """``(sub_model, tasks)`` of ``branch``, from a full SD-MTCNN or a saved sub-model."""
    from keras_sdmtcnn.errors import UserError

    names = list(model.output) if isinstance(model.output, dict) else []
    suffix = f"_{branch}"
    tasks = [n[: -len(suffix)] for n in names if n.endswith(suffix)]
    if not tasks:
        have = sorted({n.rsplit("_", 1)[-1] for n in names})
        raise UserError(
            f"The model has no {branch} branch (it has: {', '.join(have) or 'none'}); "
            "export the full model (model.keras or the run directory) to choose a branch."
        )
    sub = model.branch_model(branch) if hasattr(model, "branch_model") else model
    return sub, tasks


def serving_function(model, branch, image_size, input_dtype="uint8",
                     image_normalization="unit"):
    """Returns ``(serve, input_spec, tasks)`` for ``branch`` of an SD-MTCNN.

    ``serve(image)`` maps a ``(1, H, W, 3)`` tensor of raw pixels to the dict
    of named outputs described in the module docstring.
    """
    if input_dtype not in ("uint8", "float32"):
        raise ValueError(f"input_dtype must be uint8 or float32, got {input_dtype!r}.")
    sub, tasks = branch_of(model, branch)
    height, width = image_size
    preprocess = ImagePreprocessing(image_normalization, name="preprocessing")

    def serve(image):
        out = sub(preprocess(image), training=False)
        result = {}
        for task in tasks:
            spec = get_task(task)
            y = tf.cast(out[output_name(task, branch)], tf.float32)
            result[spec.value_output] = y
            if spec.is_classification:
                result[spec.classes_output] = tf.argmax(y, axis=-1, output_type=tf.int32)
        return result

    spec = tf.TensorSpec((1, height, width, 3), tf.as_dtype(input_dtype), name="image")
    return serve, spec, tasks


def write_saved_model(model, serve, folder, input_signature=None):
    """Writes ``serve`` as a SavedModel endpoint ``serve``, tracking ``model``'s variables.

    ``keras.export.ExportArchive`` freezes the Keras 3 variables, so the
    SavedModel converts to TFLite and loads anywhere without Keras.
    """
    import keras

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve, input_signature=input_signature)
    archive.write_out(folder, verbose=False)


def output_specs(outputs, tasks):
    """``metadata.json`` entries (name, shape, dtype, meaning) of a dict of outputs."""
    import numpy as np

    meanings = {}
    for task in tasks:
        meanings.update(get_task(task).serving_outputs())
    return [{"name": k, "shape": list(np.shape(v)), "dtype": str(np.asarray(v).dtype),
             "meaning": meanings[k]} for k, v in outputs.items()]
