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
