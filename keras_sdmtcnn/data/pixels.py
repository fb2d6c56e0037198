"""The pixel scaling, as a fact: raw 8-bit pixels divided by ``MAX_PIXEL`` lie in [0, 1].

``preprocessing.py`` builds the model-input conventions and the serving
layer on it; ``data prepare`` uses it to write ``.npy`` images. No
TensorFlow here, so that preparing a dataset does not load it.
"""

import numpy as np

MAX_PIXEL = 255.0  # the value of a full 8-bit channel


def scale_pixels_numpy(raw):
    """Raw pixels in ``[0, MAX_PIXEL]`` (any dtype) to float32 in ``[0, 1]``."""
    return np.asarray(raw, np.float32) / np.float32(MAX_PIXEL)
