"""What the values of a sample must be: the one set of value checks ``data check`` and ``fit`` share.

Each rule is written once, for an array module ``xp`` with numpy's names
(numpy itself, or the few TensorFlow ops of :func:`assert_values`): ``data check`` runs the rules
on every file with numpy and lists every failure; the readers run the same
rules on each sample inside the ``tf.data`` graph as it is read
(:func:`assert_values`), so that ``fit`` stops at the first bad file, naming
it, before the file can turn into a loss. A full pass over a large dataset
before every start would take minutes, so ``fit`` checks the cheap facts up
front (folders, indices, headers, shapes, sizes: the readers) and the
values while reading (here); ``data check`` does both for every file.

Rules, per key (``image`` or a task):

- every floating-point value is finite;
- ``image`` stored as floats: in [0, 1];
- ``semantic``: whole numbers, each the ignore label or in ``0 .. C - 1``;
- ``depth``: not negative (0 is invalid);
- ``normal``: each pixel a unit vector (within 0.05) or all-zero (invalid).
"""

BAD_FILE = "sdmtcnn-bad-file"  # the marker of a failed check in a TensorFlow error


def rules(key, num_classes=None, ignore=None, unit_image=True):
    """``[(description, mask_fn(x, xp))]`` for ``key``; the mask is True where a value is fine."""
    out = []
    if key == "image" and unit_image:
        out.append(("image values outside [0, 1]", lambda x, xp: (x >= 0) & (x <= 1)))
    elif key == "semantic":
        out.append(("labels are not whole numbers", lambda x, xp: x == xp.round(x)))
        if num_classes is not None:
            out.append((f"labels outside 0..{num_classes - 1} (ignore = {ignore})",
                        lambda x, xp: (x == ignore) | ((x >= 0) & (x < num_classes))))
    elif key == "depth":
        out.append(("negative depth", lambda x, xp: x >= 0))
    elif key == "normal":
        def unit_or_zero(x, xp):
            norm = xp.sqrt(xp.sum(x * x, axis=-1))
            return (norm == 0) | (xp.abs(norm - 1) <= 0.05)
        out.append(("normals are neither unit vectors nor all-zero", unit_or_zero))
    return out


def problems(key, array, num_classes=None, ignore=None, unit_image=True):
    """The descriptions of every rule a numpy ``array`` breaks (NaN/Inf first)."""
    import numpy as np

    if np.issubdtype(array.dtype, np.floating) and not np.all(np.isfinite(array)):
        return ["holds NaN or Inf"]
    return [text for text, mask in rules(key, num_classes, ignore, unit_image)
            if not np.all(mask(array, np))]


def assert_values(key, value, path, num_classes=None, ignore=None, unit_image=True):
    """``value`` (a tensor read from ``path``) after the rules, checked in the graph.

    A broken rule stops the pipeline with an ``InvalidArgumentError`` whose
    message holds ``BAD_FILE``, the path and the rule (see :func:`bad_file`).
    """
    import types

    import tensorflow as tf

    # The numpy names the rules use (tf.experimental.numpy would need numpy
    # behaviour switched on for every tensor in the process).
    tnp = types.SimpleNamespace(round=tf.round, sqrt=tf.sqrt, abs=tf.abs,
                                sum=lambda x, axis: tf.reduce_sum(x, axis=axis))
    checks = []
    if value.dtype.is_floating:
        checks.append(("holds NaN or Inf", tf.reduce_all(tf.math.is_finite(value))))
    checks += [(text, tf.reduce_all(mask(value, tnp)))
               for text, mask in rules(key, num_classes, ignore, unit_image)]
    with tf.control_dependencies(
            [tf.debugging.Assert(ok, [BAD_FILE, path, text]) for text, ok in checks]):
        return tf.identity(value)


def bad_file(message):
    """``(path, rule)`` from a TensorFlow error raised by :func:`assert_values`, else ``None``."""
    import re

    found = re.search(rf"\[{BAD_FILE}\] \[(.*?)\] \[(.*?)\]", message)
    return (found.group(1), found.group(2)) if found else None


# What TensorFlow says when a file cannot be read or decoded (a PNG whose
# pixel data is corrupt, a file cut short or gone); other runtime errors are
# not about the data.
_FILE_ERRORS = ("DecodePng", "DecodeImage", "DecodeRaw", "Invalid PNG data", "Invalid JPEG data",
                "ReadFile", "Read less bytes", "truncated", "No such file")


def file_error(message):
    """Whether a TensorFlow error met while reading data is about a file (not the runtime)."""
    return any(text in message for text in _FILE_ERRORS)
