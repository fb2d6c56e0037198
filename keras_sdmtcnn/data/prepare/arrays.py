"""Resizing for ``data prepare``, written out so that every stored value is explained.

- :func:`nearest`: output pixel ``(i, j)`` takes input pixel
  ``(floor((i + 0.5) * H_in / H_out), floor((j + 0.5) * W_in / W_out))``,
  the input pixel under the output pixel's centre. Labels, invalid codes
  and depth values are copied, never blended (a blend of two class ids or
  of a valid and an invalid depth is meaningless). Written by hand because
  the libraries differ on which pixel "nearest" picks (PIL and OpenCV by
  version, TensorFlow by ``half_pixel_centers``); this rule is the one
  stated in the docs.
- :func:`image_unit`: an 8-bit RGB image resized with PIL's bilinear filter
  (antialiased when shrinking) and scaled to ``[0, 1]`` float32 by the
  library's one pixel scaling (``data/pixels.py``).
"""

import numpy as np


def nearest_indices(n_in, n_out):
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


def nearest(array, size):
    """``array`` (H, W, ...) resized to ``size = (h, w)`` by nearest neighbour."""
    h, w = size
    rows = nearest_indices(array.shape[0], h)
    cols = nearest_indices(array.shape[1], w)
    return array[rows][:, cols]


def image_unit(rgb, size):
    """An (H, W, 3) uint8 image at ``size = (h, w)`` as float32 in ``[0, 1]``."""
    from PIL import Image

    from keras_sdmtcnn.data.pixels import scale_pixels_numpy

    h, w = size
    if rgb.shape[:2] != (h, w):
        rgb = np.asarray(Image.fromarray(rgb).resize((w, h), Image.BILINEAR))
    return scale_pixels_numpy(rgb)
