"""Reader for the Taskonomy / Mini-Taskonomy layout, as a ``tf.data`` pipeline.

Layout (``docs/data_formats.md`` gives the details)::

    ROOT/{domain}/{building}/point_{p}_view_{v}_domain_{domain}.png

with domains ``rgb``, ``segment_semantic`` (or the older
``segmentsemantic``), ``depth_zbuffer``, ``normal``, ``keypoints2d`` and
``edge_texture``.

Decoding (the targets the losses expect, see ``tasks.py``):

- image: 8-bit RGB to the model's input convention (``preprocessing.py``:
  ``[0, 1]``, or standardised with ``image_normalization="imagenet"``).
- ``semantic``: 8-bit labels, int32; 0 = uncertain = the ignore label.
- ``depth``: 16-bit in units of 1/512 m, to metres; 65535 (invalid) to 0.
- ``normal``: 8-bit RGB, ``n = 2 x / 255 - 1``; pixels stored as the invalid
  value (128, 128, 128) decode to the zero vector (invalid).
- ``keypoints`` / ``edges``: 16-bit PNG divided by 65535 to ``[0, 1]``
  (``target_normalization="unit"``); an 8-bit file is scaled by 255 instead,
  from its real bit depth. ``"standley"`` applies Standley et al.'s
  ``(k - 50) / 100`` and ``(e - 718) / 1070`` to the raw 16-bit values.

Resizing to the recipe's size is bilinear for the image, keypoints and edges,
and nearest for labels, depth and normals (so invalid pixels stay invalid and
no label is invented). The optional left-right flip negates the normal's x.
"""

import csv
import os

import numpy as np
import tensorflow as tf

from keras_sdmtcnn.data.formats import TASKONOMY_DOMAINS, get_format
from keras_sdmtcnn.data.pipeline import eval_pipeline, train_pipeline
from keras_sdmtcnn.data.png import check_png
from keras_sdmtcnn.data.preprocessing import normalize, scale_pixels
from keras_sdmtcnn.data.values import assert_values
from keras_sdmtcnn.errors import UserError

DOMAINS = {task: names for task, names in TASKONOMY_DOMAINS.items() if task != "rgb"}
STANDLEY = {"keypoints": (50.0, 100.0), "edges": (718.0, 1070.0)}
_EXPECT = {  # bit depths, channels
    "rgb": ((8,), (3, 4)),
    "semantic": ((8,), (1,)),
    "depth": ((16,), (1,)),
    "normal": ((8,), (3, 4)),
    "keypoints": ((8, 16), (1,)),
    "edges": ((8, 16), (1,)),
}


def find_domain_dir(root, task):
    """The folder of ``task`` under ``root`` (accepting older names)."""
    names = TASKONOMY_DOMAINS[task]
    for name in names:
        if os.path.isdir(os.path.join(root, name)):
            return name
    raise UserError(
        f"No {' or '.join(names)}/ folder under the dataset root {root}: the "
        f"task {task!r} needs it (or remove it from data.tasks)."
    )


def read_split(root, split):
    """Resolves a split to a list of ``(building, point, view)``.

    ``split`` is a list of building names, a path to a ``.txt`` file with one
    building per line, or a path to a ``.csv`` file with columns ``building,
    point, view`` (relative paths are taken under ``root``).
    """
    rgb = os.path.join(root, find_domain_dir(root, "rgb"))
    if isinstance(split, str):
        path = split if os.path.isabs(split) else os.path.join(root, split)
        if not os.path.isfile(path):
            raise UserError(
                f"Split file {path} does not exist: give a list of buildings, "
                "a .txt file of buildings or a .csv of building,point,view."
            )
        if path.endswith(".csv"):
            with open(path, newline="") as f:
                rows = list(csv.DictReader(f))
            if rows and not {"building", "point", "view"} <= set(rows[0]):
                raise UserError(f"{path} must have columns building, point, view.")
            samples = [(r["building"], r["point"], r["view"]) for r in rows]
            if not samples:
                raise UserError(f"Split {path} is empty: it lists no sample.")
            return samples
        with open(path) as f:
            split = [line.strip() for line in f if line.strip()]
    buildings = list(split)
    if not buildings:
        raise UserError(f"A split under {root} lists no building.")
    samples = []
    for building in buildings:
        folder = os.path.join(rgb, building)
        if not os.path.isdir(folder):
            raise UserError(f"Building folder {folder} does not exist (named by the split).")
        for name in sorted(os.listdir(folder)):
            parts = name.split("_")
            if name.endswith(".png") and len(parts) >= 6 and parts[0] == "point":
                samples.append((building, parts[1], parts[3]))
    if not samples:
        raise UserError(f"The split under {root} ({buildings[:3]}...) holds no rgb image.")
    return samples


def sample_paths(root, samples, tasks):
    """Paths of every file of every sample, checked to exist. ``{key: [paths]}``."""
    paths = {}
    for key in ("rgb", *tasks):
        domain = find_domain_dir(root, key)
        paths[key] = [
            os.path.join(root, domain, b, f"point_{p}_view_{v}_domain_{domain}.png")
            for b, p, v in samples
        ]
        existing = set()
        for b in {s[0] for s in samples}:
            folder = os.path.join(root, domain, b)
            if os.path.isdir(folder):
                existing.update(os.path.join(folder, n) for n in os.listdir(folder))
        missing = [p for p in paths[key] if p not in existing]
        if missing:
            raise UserError(
                f"Missing file {missing[0]} ({len(missing)} missing for {key!r}): "
                "restore it, or drop the sample from the split."
            )
    return paths


def check_files(paths, limit=None):
    """Checks PNG headers (bit depth, channels, truncation) of the listed files."""
    for key, files in paths.items():
        bits, channels = _EXPECT[key]
        for path in files[:limit]:
            check_png(path, bits, channels, key)


def _decode(contents, channels, dtype):
    return tf.io.decode_png(contents, channels=channels, dtype=dtype)


def decode_sample(files, tasks, image_size, image_normalization="unit",
                  target_normalization="unit", num_classes=None, ignore=None):
    """Decodes one sample's files (a dict of path tensors) into (image, targets).

    Labels are checked as they are read (``data/values.py``) against
    ``num_classes`` and ``ignore``.
    """
    height, width = image_size
    image = scale_pixels(_decode(tf.io.read_file(files["rgb"]), 3, tf.uint8))
    image = tf.image.resize(image, (height, width), method="bilinear", antialias=True)
    image = normalize(image, image_normalization)
    targets = {}
    for task in tasks:
        contents = tf.io.read_file(files[task])
        if task == "semantic":
            label = tf.cast(_decode(contents, 1, tf.uint8), tf.int32)
            label = assert_values(task, label, files[task], num_classes, ignore)
            label = tf.image.resize(label, (height, width), method="nearest")
            targets[task] = label[..., 0]
        elif task == "depth":
            raw = _decode(contents, 1, tf.uint16)
            raw = tf.image.resize(raw, (height, width), method="nearest")
            raw = tf.cast(raw, tf.float32)
            targets[task] = tf.where(raw >= 65535.0, 0.0, raw / 512.0)
        elif task == "normal":
            raw = tf.cast(_decode(contents, 3, tf.uint8), tf.float32)
            raw = tf.image.resize(raw, (height, width), method="nearest")
            invalid = tf.reduce_all(tf.equal(raw, 128.0), axis=-1, keepdims=True)
            normal = raw * (2.0 / 255.0) - 1.0
            targets[task] = tf.where(invalid, 0.0, normal)
        else:
            # decode_png at uint16 scales 8-bit files by 257, so /65535 maps
            # both bit depths to [0, 1].
            raw = tf.cast(_decode(contents, 1, tf.uint16), tf.float32)
            raw = tf.image.resize(raw, (height, width), method="bilinear")
            if target_normalization == "standley":
                shift, scale = STANDLEY[task]
                targets[task] = (raw - shift) / scale
            else:
                targets[task] = raw / 65535.0
    return image, targets


def taskonomy_source(root, split, tasks, image_size, image_normalization="unit",
                     target_normalization="unit", check_all_files=True, num_classes=None,
                     ignore=None):
    """``(paths, decode, num_samples)`` of a split, every file's header checked first.

    ``num_classes`` and ``ignore`` (default: Taskonomy's) bound the labels
    checked as they are read.
    """
    if not os.path.isdir(root):
        raise UserError(
            f"Dataset root {root} does not exist: set data.root in the recipe "
            "(or --set data.root=PATH)."
        )
    samples = read_split(root, split)
    paths = sample_paths(root, samples, tasks)
    check_files(paths, limit=None if check_all_files else 1)

    spec = get_format("taskonomy")
    num_classes = num_classes or spec.label_set().num_classes
    ignore = spec.ignore_label if ignore is None else ignore

    def decode(files):
        return decode_sample(files, tasks, image_size, image_normalization,
                             target_normalization, num_classes, ignore)

    return paths, decode, len(samples)


def taskonomy_dataset(root, split, tasks, image_size, batch_size, shuffle=False,
                      flip=False, image_normalization="unit",
                      target_normalization="unit", seed=0, check_all_files=True):
    """A batched ``tf.data.Dataset`` of ``(image, {task: target})`` and its size.

    Args:
        root: the dataset root.
        split: list of buildings, or a ``.txt``/``.csv`` split file.
        tasks: tasks whose targets to read.
        image_size: ``(height, width)`` to resize to.
        shuffle, flip: one seeded shuffled epoch with random left-right flips
            (training runs use ``pipeline.train_pipeline`` over all epochs).
        check_all_files: check every file's PNG header before starting
            (otherwise only the first sample's).
    """
    paths, decode, n = taskonomy_source(root, split, tasks, image_size, image_normalization,
                                        target_normalization, check_all_files)
    if shuffle or flip:
        return train_pipeline(paths, decode, n, batch_size, seed, epochs=1, flip=flip), n
    return eval_pipeline(paths, decode, batch_size), n


def numpy_targets(ds):
    """Materialises a dataset as numpy (for tests and small evaluations)."""
    images, targets = [], {}
    for x, y in ds:
        images.append(x.numpy())
        for k, v in y.items():
            targets.setdefault(k, []).append(v.numpy())
    return np.concatenate(images), {k: np.concatenate(v) for k, v in targets.items()}
