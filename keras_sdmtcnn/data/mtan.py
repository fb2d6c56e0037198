"""Readers for NYUv2 and CityScapes in MTAN's preprocessed ``.npy`` layout.

Layout (``docs/data_formats.md`` gives the details)::

    ROOT/{train,val}/image/{i}.npy    float (H, W, 3) in [0, 1]
    ROOT/{train,val}/label/{i}.npy    float (H, W), classes, -1 = ignore
    ROOT/{train,val}/depth/{i}.npy    float (H, W, 1), 0 = invalid
    ROOT/{train,val}/normal/{i}.npy   float (H, W, 3), all-zero = invalid   (NYUv2)

NYUv2: 288x384, 13 classes, depth in metres. CityScapes: 128x256 (or
256x512), labels in ``label_7/`` (7 classes; ``label/`` is accepted when
``label_7/`` is absent, and the one used is reported), ``label_19/`` and
``label_2/`` on request, and depth as the released **inverse depth
(disparity-like), not metres**: errors are in those units.

Files are decoded inside the ``tf.data`` graph (no Python per sample): each
folder's ``.npy`` header is parsed once in Python, checked to be the same for
every file (dtype, shape, little-endian, size on disk), and the raw bytes
after it are reinterpreted in parallel. Labels are cast to int32.

NYUv2 has no validation split: ``data.val_source: holdout`` holds out a
seeded fraction of ``train`` for model selection; ``val`` (the default) is
the split that published numbers are reported on.
"""

import os

import numpy as np
import tensorflow as tf

from keras_sdmtcnn.data.formats import get_format
from keras_sdmtcnn.data.pipeline import eval_pipeline, train_pipeline
from keras_sdmtcnn.data.prepare.output import read_record
from keras_sdmtcnn.data.preprocessing import normalize
from keras_sdmtcnn.data.values import assert_values
from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.tasks import get_task

TASK_DIRS = {"depth": "depth", "normal": "normal"}


def label_dir(split_dir, fmt, requested=None):
    """The label folder to read: ``requested``, else NYUv2 ``label``, CityScapes ``label_7`` or ``label``."""
    names = [requested] if requested else (["label"] if fmt == "nyuv2" else ["label_7", "label"])
    for name in names:
        if os.path.isdir(os.path.join(split_dir, name)):
            return name
    raise UserError(
        f"No {' or '.join(names)}/ folder in {split_dir}: the semantic task needs it."
    )


def npy_header(path):
    """``(offset, dtype, shape)`` of a ``.npy`` file, checked against its size."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                      else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = reader(f)
            offset = f.tell()
            size = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise UserError(f"Missing file {path}.") from None
    except (ValueError, OSError) as e:
        raise UserError(f"{path} is not a valid .npy file ({e}).") from None
    if fortran:
        raise UserError(f"{path} is stored in Fortran order; re-save it with np.save (C order).")
    if dtype.byteorder == ">" or dtype.kind not in "fiub":
        raise UserError(f"{path} has dtype {dtype}; a little-endian number type is needed.")
    if size != offset + int(np.prod(shape)) * dtype.itemsize:
        raise UserError(f"{path} is truncated or padded: {size} bytes for shape {shape}.")
    return offset, dtype, tuple(shape)


def _indices(folder):
    if not os.path.isdir(folder):
        raise UserError(f"Folder {folder} does not exist.")
    names = [n for n in os.listdir(folder) if n.endswith(".npy")]
    try:
        indices = sorted(int(n[:-4]) for n in names)
    except ValueError:
        raise UserError(f"{folder} holds .npy files not named by an index (0.npy, 1.npy, ...).") from None
    if not indices:
        raise UserError(f"{folder} holds no .npy file: the split is empty.")
    if indices != list(range(len(indices))):
        missing = sorted(set(range(indices[-1] + 1)) - set(indices))
        raise UserError(f"{folder} misses index files {missing[:5]} (indices must run 0..N-1).")
    return indices


def folder_header(folder, indices, what, expected_channels):
    """Checks every file's header in a folder; returns the common one."""
    first = npy_header(os.path.join(folder, f"{indices[0]}.npy"))
    shape = first[2]
    if expected_channels is None and len(shape) not in (2, 3):
        raise UserError(f"{folder}/0.npy: {what} must be (H, W), found shape {shape}.")
    if expected_channels is not None and (len(shape) != 3 or shape[-1] != expected_channels):
        raise UserError(
            f"{folder}/0.npy: {what} must be (H, W, {expected_channels}), found shape {shape}."
        )
    for i in indices[1:]:
        path = os.path.join(folder, f"{i}.npy")
        header = npy_header(path)
        if header != first:
            raise UserError(
                f"{path}: dtype/shape {header[1]}{header[2]} differs from {folder}/0.npy "
                f"({first[1]}{first[2]})."
            )
    return first


def _decoder(header):
    offset, dtype, shape = header
    tf_dtype = tf.as_dtype(dtype.newbyteorder("<") if dtype.byteorder == "=" else dtype)
    start = offset // dtype.itemsize

    def decode(path):
        raw = tf.io.decode_raw(tf.io.read_file(path), tf_dtype)
        return tf.reshape(raw[start:], shape)

    if offset % dtype.itemsize:
        raise UserError(f"Unaligned .npy header ({offset} bytes) for dtype {dtype}.")
    return decode


class MTANSplit:
    """One split folder (``ROOT/train`` or ``ROOT/val``), checked and ready to decode."""

    def __init__(self, root, split, fmt, tasks, label_folder=None):
        if not os.path.isdir(root):
            raise UserError(
                f"Dataset root {root} does not exist: set data.root in the recipe "
                "(or --set data.root=PATH)."
            )
        # A folder written by `data prepare` records its depth units; an
        # unfinished one is refused (read_record).
        record = read_record(root) or {}
        self.depth_units = record.get("conventions", {}).get("depth_units")
        # Disparity in pixels grows with a zoom (and with the stored width);
        # depth, and MTAN's released inverse depth by MTAN's convention, shrink.
        self.depth_zoom = "multiply" if self.depth_units == "disparity_px" else "divide"
        self.dir = os.path.join(root, split)
        if not os.path.isdir(self.dir):
            raise UserError(f"Split folder {self.dir} does not exist (expected {split}/ under {root}).")
        self.tasks = list(tasks)
        self.folders = {"image": "image"}
        for task in self.tasks:
            if task not in get_format(fmt).tasks:
                raise UserError(f"The {fmt} layout has no {task!r} task; its tasks: "
                                f"{', '.join(get_format(fmt).tasks)}.")
            if get_task(task).is_classification:
                self.folders[task] = label_dir(self.dir, fmt, label_folder)
            else:
                self.folders[task] = TASK_DIRS[task]
        self.indices = _indices(os.path.join(self.dir, "image"))
        self.headers = {}
        for key, folder in self.folders.items():
            path = os.path.join(self.dir, folder)
            if _indices(path) != self.indices:
                raise UserError(
                    f"{path} has {len(_indices(path))} files but image/ has "
                    f"{len(self.indices)}: every task needs the same indices."
                )
            channels = 3 if key == "image" else get_task(key).channels
            self.headers[key] = folder_header(path, self.indices, key, channels)
        sizes = {key: h[2][:2] for key, h in self.headers.items()}
        if len(set(sizes.values())) != 1:
            raise UserError(f"Image and target sizes differ in {self.dir}: {sizes}.")
        self.native_size = sizes["image"]

    def paths(self, indices):
        return {key: [os.path.join(self.dir, folder, f"{i}.npy") for i in indices]
                for key, folder in self.folders.items()}

    def decode_fn(self, image_size, image_normalization="unit", num_classes=None, ignore=None):
        """Paths -> ``(image, targets)``, every value checked as read (``data/values.py``)."""
        decoders = {key: _decoder(h) for key, h in self.headers.items()}
        resize = tuple(image_size) != tuple(self.native_size)
        # Disparity in pixels at the stored width, read at another width.
        disparity_scale = (image_size[1] / self.native_size[1]
                           if self.depth_units == "disparity_px" else 1.0)

        def decode(paths):
            image = assert_values("image", tf.cast(decoders["image"](paths["image"]), tf.float32),
                                  paths["image"])
            targets = {}
            for task in self.tasks:
                value = assert_values(task, decoders[task](paths[task]), paths[task],
                                      num_classes, ignore)
                if get_task(task).is_classification:
                    value = tf.cast(tf.round(tf.cast(value, tf.float32)), tf.int32)
                    if len(self.headers[task][2]) == 3:
                        value = value[..., 0]
                else:
                    value = tf.cast(value, tf.float32)
                targets[task] = value
            if resize:
                image = tf.image.resize(image, image_size, method="bilinear")
                for task, value in targets.items():
                    if get_task(task).is_classification:
                        value = tf.image.resize(value[..., None], image_size, "nearest")[..., 0]
                    else:
                        value = tf.image.resize(value, image_size, "nearest")
                        if task == "depth" and disparity_scale != 1.0:
                            value = value * disparity_scale
                    targets[task] = value
            # The stored images are already in [0, 1] (scaled when the folders were made).
            return normalize(image, image_normalization), targets

        return decode


def holdout_indices(n, fraction, seed):
    """``(train_part, held_out)``: a seeded, disjoint split of ``range(n)``."""
    if not 0 < fraction < 1:
        raise UserError(f"data.holdout_fraction must be in (0, 1), got {fraction}.")
    order = np.random.default_rng(seed).permutation(n)
    k = max(1, int(round(n * fraction)))
    return sorted(order[k:].tolist()), sorted(order[:k].tolist())


def mtan_source(root, split, fmt, tasks, image_size, indices=None, label_folder=None,
                image_normalization="unit", num_classes=None, ignore=None):
    """``(paths, decode, num_samples, MTANSplit)`` of a split, every header checked.

    ``num_classes`` and ``ignore`` (default: the format's) bound the labels
    checked as they are read.
    """
    data = MTANSplit(root, split, fmt, tasks, label_folder)
    indices = data.indices if indices is None else list(indices)
    spec = get_format(fmt)
    num_classes = num_classes or spec.label_set(label_folder).num_classes
    ignore = spec.ignore_label if ignore is None else ignore
    decode = data.decode_fn(tuple(image_size), image_normalization, num_classes, ignore)
    return data.paths(indices), decode, len(indices), data


def mtan_dataset(root, split, fmt, tasks, image_size, batch_size, shuffle=False,
                 augment=False, flip=False, seed=0, cache=False, indices=None,
                 label_folder=None, image_normalization="unit"):
    """A batched ``tf.data.Dataset`` of ``(image, {task: target})``, its size and source.

    Args:
        split: ``"train"`` or ``"val"`` (the folder under ``root``).
        fmt: ``"nyuv2"`` or ``"cityscapes"``.
        shuffle, augment, flip: one seeded shuffled epoch with MTAN's random
            scale-crop and flip (``augment``) or flips only (training runs use
            ``pipeline.train_pipeline`` over all epochs).
        cache: keep decoded samples in memory after the first pass.
        indices: a subset of the split's indices (for held-out parts).
    """
    paths, decode, n, data = mtan_source(root, split, fmt, tasks, image_size, indices,
                                         label_folder, image_normalization)
    if shuffle or augment or flip:
        ds = train_pipeline(paths, decode, n, batch_size, seed, epochs=1, scale=augment,
                            flip=augment or flip, cache=cache, depth_zoom=data.depth_zoom)
    else:
        ds = eval_pipeline(paths, decode, batch_size)
    return ds, n, data
