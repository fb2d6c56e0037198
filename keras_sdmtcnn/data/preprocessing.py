"""Pixel scaling and normalisation: the one definition of what a model's input is.

A model of this library takes images in one of two conventions, chosen by
the recipe's ``data.image_normalization``:

- ``unit``: RGB in ``[0, 1]``, that is raw 8-bit pixels divided by 255;
- ``imagenet``: the same, then standardised per channel with the ImageNet
  mean and standard deviation.

Every reader brings its images there with :func:`scale_pixels` (for 8-bit
files) and :func:`normalize`, and the exported serving graph puts
:class:`ImagePreprocessing` (the two in one layer) in front of the model, so
training and serving compute exactly the same input from the same pixels.
:func:`to_raw_pixels` inverts the two, for comparing an export with the
Keras model on the images of a dataset.
"""

import keras
import numpy as np

from keras_sdmtcnn import PACKAGE
from keras_sdmtcnn.data.pixels import MAX_PIXEL

NORMALIZATIONS = ("unit", "imagenet")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _check(normalization):
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"image normalization must be one of {NORMALIZATIONS}, got {normalization!r}.")


def scale_pixels(raw):
    """Raw pixels in ``[0, 255]`` (any dtype) to float32 in ``[0, 1]``."""
    import tensorflow as tf

    return tf.cast(raw, tf.float32) / MAX_PIXEL


def normalize(image, normalization="unit"):
    """An image in ``[0, 1]`` in the model's input convention (``unit`` or ``imagenet``)."""
    _check(normalization)
    if normalization == "imagenet":
        return (image - IMAGENET_MEAN) / IMAGENET_STD
    return image


@keras.saving.register_keras_serializable(package=PACKAGE)
class ImagePreprocessing(keras.layers.Layer):
    """Raw pixels in ``[0, 255]`` to a model's input: :func:`scale_pixels`, then :func:`normalize`.

    Args:
        normalization: ``"unit"`` or ``"imagenet"`` (the recipe's
            ``data.image_normalization``).

    Example:
        >>> x = ImagePreprocessing("imagenet")(uint8_images)   # float32, standardised
    """

    def __init__(self, normalization="unit", **kwargs):
        super().__init__(**kwargs)
        _check(normalization)
        self.normalization = normalization

    def call(self, raw):
        return normalize(scale_pixels(raw), self.normalization)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "normalization": self.normalization}


def to_raw_pixels(images, normalization="unit", input_dtype="uint8"):
    """Inverts :func:`normalize` and :func:`scale_pixels`: model inputs back to ``[0, 255]``."""
    _check(normalization)
    x = np.asarray(images, np.float32)
    if normalization == "imagenet":
        x = x * np.array(IMAGENET_STD, np.float32) + np.array(IMAGENET_MEAN, np.float32)
    x = np.clip(x * MAX_PIXEL, 0, MAX_PIXEL)
    return np.round(x).astype(np.uint8) if input_dtype == "uint8" else x.astype(np.float32)


# Largest value a scaled image holds: 1 for ``unit``, about 2.64 for
# ``imagenet`` ((1 - 0.406) / 0.225); raw 0-255 pixels are far above.
_LARGEST_SCALED = 3.0


def check_model_inputs(x, y, input_shape, tasks=None):
    """What a model takes, checked where a user hands it data (``fit``, ``evaluate``, ``predict``).

    ``x``: images of the model's ``input_shape`` (batch first), floats scaled
    as above, never raw 8-bit pixels; ``y`` (when ``tasks`` is given): a dict
    with a target for each task. ``x`` may be an array or a ``tf.data``
    dataset of ``(images, targets)``; anything else passes to Keras as it
    is. Raises :class:`~keras_sdmtcnn.errors.UserError` naming what is wrong.
    """
    import tensorflow as tf

    from keras_sdmtcnn.errors import UserError

    size = tuple(input_shape[1:3])
    if isinstance(x, tf.data.Dataset):
        spec = x.element_spec
        image_spec = spec[0] if isinstance(spec, tuple) else spec
        target_spec = spec[1] if isinstance(spec, tuple) and len(spec) > 1 else None
        shape, dtype = tuple(image_spec.shape), image_spec.dtype
        keys = list(target_spec) if isinstance(target_spec, dict) else None
        largest = None
    elif isinstance(x, (np.ndarray, tf.Tensor)) or hasattr(x, "__array__"):
        array = np.asarray(x)
        shape, dtype = array.shape, tf.as_dtype(array.dtype)
        largest = float(np.max(array)) if array.size and array.dtype.kind in "fiu" else None
        keys = list(y) if isinstance(y, dict) else None
        target_spec = y
    else:
        return
    if len(shape) != 4 or any(s is not None and m is not None and s != m
                              for s, m in zip(shape[1:3], size)):
        raise UserError(
            f"images of shape {shape} (batch, height, width, channels): this model takes "
            f"{size[0]} x {size[1]} images (height x width), the size it was built for. Resize "
            "them, or load the model of a run at this size.")
    if dtype == tf.uint8 or (largest is not None and largest > _LARGEST_SCALED):
        raise UserError(
            f"images of {dtype.name} pixels up to {largest if largest is not None else 255:g}: "
            "the Keras model takes floats scaled as the recipe's data.image_normalization says "
            "(unit: pixels / 255, in [0, 1]); scale them with keras_sdmtcnn.data.preprocessing"
            ".ImagePreprocessing(normalization), or use an exported model, which takes raw "
            "pixels.")
    if tasks is None or target_spec is None:
        return
    if keys is None:
        raise UserError(f"targets must be a dict {{task: array}} with a target for each of "
                        f"{', '.join(tasks)}; got {type(target_spec).__name__}.")
    missing = [t for t in tasks if t not in keys]
    if missing:
        raise UserError(
            f"the targets lack task(s) {', '.join(repr(t) for t in missing)}: this model "
            f"predicts {', '.join(tasks)}, and needs a target for each.")
