"""Augmentations shared by every reader, as stateless (seeded) TF functions.

- :func:`flip_left_right`: mirrors image and targets; the normal's x
  component changes sign (the task table's ``flip_sign``).
- :func:`scale_crop`: MTAN's ``RandomScaleCrop`` for one scale ``s``: a crop
  of ``(H/s, W/s)`` at ``(top, left)`` resized back to ``(H, W)``, bilinear
  for the image and each target as its task says (``TaskSpec.resize``:
  nearest for labels and depth, bilinear for normals, keypoints and edges),
  and **depth divided by s** (``scales_with_zoom``: a closer look makes
  things nearer), or multiplied by s for disparity in pixels
  (``depth_zoom="multiply"``, CityScapes as ``data prepare`` stores it).
- :func:`random_augment`: the scale (one of ``{1.0, 1.2, 1.5}``), crop
  position and flip (p = 0.5) drawn from a per-sample stateless seed (see
  ``pipeline.py``), so a run is reproducible for its recipe seed whatever the
  parallelism of the pipeline.

Targets follow ``tasks.py``: ``semantic`` is ``(H, W)``, the others
``(H, W, C)``.
"""

import tensorflow as tf

from keras_sdmtcnn.tasks import get_task

SCALES = (1.0, 1.2, 1.5)


def flip_left_right(image, targets):
    """Mirrors a sample; values with a left-right sign (``TaskSpec.flip_sign``) change it."""
    image = tf.reverse(image, axis=[-2])
    flipped = {}
    for task, target in targets.items():
        spec = get_task(task)
        axis = -1 if spec.is_classification else -2
        target = tf.reverse(target, axis=[axis])
        if spec.flip_sign is not None:
            target = target * tf.constant(spec.flip_sign, target.dtype)
        flipped[task] = target
    return image, flipped


def _resize(x, size, method):
    return tf.cast(tf.image.resize(x, size, method=method), x.dtype)


def _resize_target(x, size, task):
    spec = get_task(task)
    if spec.is_classification:
        return tf.image.resize(x[..., None], size, method="nearest")[..., 0]
    return _resize(x, size, spec.resize)


def scale_crop(image, targets, scale, top, left, depth_zoom="divide"):
    """Crops ``(H/scale, W/scale)`` at ``(top, left)`` and resizes back to ``(H, W)``.

    Values of tasks that scale with a zoom are divided by ``scale``
    (``depth_zoom="divide"``) or multiplied (``"multiply"``: disparity).
    """
    if depth_zoom not in ("divide", "multiply"):
        raise ValueError(f"depth_zoom must be 'divide' or 'multiply', got {depth_zoom!r}.")
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    scale = tf.cast(scale, tf.float32)
    crop_h = tf.cast(tf.cast(height, tf.float32) / scale, tf.int32)
    crop_w = tf.cast(tf.cast(width, tf.float32) / scale, tf.int32)
    size = tf.stack([height, width])

    def crop(x):
        return x[top:top + crop_h, left:left + crop_w]

    image = _resize(crop(image), size, "bilinear")
    out = {}
    for task, target in targets.items():
        target = _resize_target(crop(target), size, task)
        if get_task(task).scales_with_zoom:
            target = target * scale if depth_zoom == "multiply" else target / scale
        out[task] = target
    return image, out


def random_augment(image, targets, seed, scale=True, flip=True, depth_zoom="divide"):
    """MTAN's augmentation drawn from ``seed`` (a shape-[2] int tensor)."""
    seeds = tf.random.experimental.stateless_split(seed, 4)
    if scale:
        index = tf.random.stateless_uniform([], seeds[0], 0, len(SCALES), tf.int32)
        s = tf.gather(tf.constant(SCALES), index)
        shape = tf.shape(image)
        crop_h = tf.cast(tf.cast(shape[0], tf.float32) / s, tf.int32)
        crop_w = tf.cast(tf.cast(shape[1], tf.float32) / s, tf.int32)
        top = tf.random.stateless_uniform([], seeds[1], 0, shape[0] - crop_h + 1, tf.int32)
        left = tf.random.stateless_uniform([], seeds[2], 0, shape[1] - crop_w + 1, tf.int32)
        image, targets = scale_crop(image, targets, s, top, left, depth_zoom)
    if flip:
        coin = tf.random.stateless_uniform([], seeds[3]) < 0.5
        image, targets = tf.cond(
            coin, lambda: flip_left_right(image, targets), lambda: (image, targets)
        )
    return image, targets
