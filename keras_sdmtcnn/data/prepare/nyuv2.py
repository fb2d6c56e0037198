"""NYUv2 from the official labelled file to MTAN's ``.npy`` layout (13 classes).

Input (``RAW_ROOT``), the files users download together:

- ``nyu_depth_v2_labeled.mat``: MATLAB v7.3, that is HDF5, read with
  ``h5py``; MATLAB stores arrays transposed, so ``images`` is
  ``(N, 3, W, H)`` uint8, ``depths`` ``(N, W, H)`` float metres and
  ``labels`` ``(N, W, H)`` uint16 (0 = unlabelled, 1..894 classes);
- ``splits.mat``: ``trainNdxs`` (795) and ``testNdxs`` (654), 1-based;
- ``classMapping40.mat``: ``mapClass``, 894 values in 1..40;
- ``class13Mapping.mat``: ``classMapping13`` (its ``labels13`` field, or the
  array itself), 40 values in 1..13.

The small ``.mat`` files are read with ``scipy.io``; no table is copied into
this code. Output: ``train/`` (the train indices) and ``val/`` (the test
indices, where published numbers are reported), each with ``image/``
(float [0, 1]), ``label/`` (0..12, unlabelled -> -1), ``depth/`` (metres,
0 = invalid) and ``normal/`` (unit vectors, all-zero = invalid).

Surface normals (:func:`normals_from_depth`): each valid pixel is
back-projected with the Kinect intrinsics; a plane is fitted by total
least squares (the covariance's smallest eigenvector) to the valid points
of the ``window`` x ``window`` neighbourhood at full resolution, and the
normal is turned to face the camera. Coordinates: the camera's, x right,
y down, z forward. A pixel is invalid where its depth is, or where fewer
than half of its window is valid. ``--normals DIR`` reads normals the user
already has instead: ``DIR/{k}.npy``, float (H, W, 3) at the ``.mat``'s
resolution, for the 0-based image index ``k``.
"""

import os

import numpy as np

from keras_sdmtcnn.data.formats import NYUV2_CLASSES
from keras_sdmtcnn.data.prepare.arrays import image_unit, nearest
from keras_sdmtcnn.data.prepare.common import optional_import
from keras_sdmtcnn.errors import UserError

DEFAULT_SIZE = (288, 384)
SPLITS = ("train", "val")
FOLDERS_OUT = ("image", "label", "depth", "normal")  # the keys convert() returns
IGNORE = -1
# The Kinect's colour-camera intrinsics of the NYUv2 toolbox (pixels, 640x480).
KINECT = {"fx": 518.86, "fy": 519.47, "cx": 325.58, "cy": 253.74}
WINDOW = 7
FILES = {
    "mat": "nyu_depth_v2_labeled.mat",
    "splits": "splits.mat",
    "map40": "classMapping40.mat",
    "map13": "class13Mapping.mat",
}
MAT_KEYS = ("images", "depths", "labels")


def _box_sum(a, window):
    """Sum of ``a`` (H, W, ...) over a ``window`` x ``window`` box centred at each pixel."""
    r = window // 2
    padded = np.pad(a, [(r + 1, r), (r + 1, r)] + [(0, 0)] * (a.ndim - 2))
    c = padded.cumsum(0).cumsum(1)
    return c[window:, window:] - c[:-window, window:] - c[window:, :-window] + c[:-window, :-window]


def normals_from_depth(depth, intrinsics=KINECT, window=WINDOW):
    """Unit normals (H, W, 3) of a depth map in metres (0 = invalid); zero where invalid."""
    depth = np.asarray(depth, np.float64)
    h, w = depth.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    valid = depth > 0
    points = np.stack([(u - intrinsics["cx"]) / intrinsics["fx"] * depth,
                       (v - intrinsics["cy"]) / intrinsics["fy"] * depth, depth], -1)
    points *= valid[..., None]
    count = _box_sum(valid.astype(np.float64), window)
    safe = np.maximum(count, 1)[..., None]
    mean = _box_sum(points, window) / safe
    outer = points[..., :, None] * points[..., None, :]
    cov = _box_sum(outer.reshape(h, w, 9), window).reshape(h, w, 3, 3) / safe[..., None]
    cov -= mean[..., :, None] * mean[..., None, :]
    _, vectors = np.linalg.eigh(cov)
    normal = vectors[..., :, 0]  # the direction of least spread: the plane's normal
    facing = np.sum(normal * points, -1) > 0  # turn it towards the camera
    normal[facing] *= -1
    ok = valid & (count >= (window * window) / 2)
    return np.where(ok[..., None], normal, 0.0).astype(np.float32)


def _loadmat(path, key, what):
    io = optional_import("scipy.io", "Reading NYUv2's mapping files")
    try:
        content = io.loadmat(path)
    except FileNotFoundError:
        raise UserError(f"Missing file {path} ({what}): download it into RAW_ROOT.") from None
    except (ValueError, TypeError, OSError, NotImplementedError) as e:
        raise UserError(f"{path} is not a readable MATLAB file ({e}); download it again.") \
            from None
    if key not in content:
        raise UserError(f"{path} has no {key!r} entry (it has "
                        f"{', '.join(k for k in content if not k.startswith('__'))}): "
                        f"is it the right file ({what})?")
    return content[key]


def _mapping(path, key, field, length, top, what):
    value = _loadmat(path, key, what)
    if value.dtype.names:  # a MATLAB struct
        if field not in value.dtype.names:
            raise UserError(f"{path}: {key} has no field {field!r} ({what}).")
        value = value[field][0, 0]
    value = np.asarray(value).ravel()
    if value.size != length:
        raise UserError(f"{path}: {key} has {value.size} entries, {length} expected ({what}); "
                        "is it the right mapping file?")
    if value.min() < 1 or value.max() > top:
        raise UserError(f"{path}: {key} holds values {value.min()}..{value.max()}, "
                        f"1..{top} expected ({what}).")
    return value.astype(np.int64)


def label_table(raw_root):
    """The 894-class -> 13-class table (index 0 = unlabelled -> -1) and its record."""
    map40 = _mapping(os.path.join(raw_root, FILES["map40"]), "mapClass", None, 894, 40,
                     "894 -> 40 classes")
    map13 = _mapping(os.path.join(raw_root, FILES["map13"]), "classMapping13", "labels13",
                     40, 13, "40 -> 13 classes")
    table = np.concatenate([[IGNORE], map13[map40 - 1] - 1])
    return table, {"label": {"894_to_40": map40.tolist(), "40_to_13": map13.tolist(),
                             "classes_13": list(NYUV2_CLASSES)}}


def split_indices(raw_root):
    path = os.path.join(raw_root, FILES["splits"])
    out = {}
    for split, key in (("train", "trainNdxs"), ("val", "testNdxs")):
        out[split] = (np.asarray(_loadmat(path, key, "the train/test split")).ravel()
                      .astype(np.int64) - 1).tolist()
    both = sorted(set(out["train"]) & set(out["val"]))
    if both:
        shown = ", ".join(str(i + 1) for i in both[:10]) + (", ..." if len(both) > 10 else "")
        raise UserError(
            f"{path}: {len(both)} image(s) are in both trainNdxs and testNdxs (1-based: "
            f"{shown}); a test image must not be trained on. Use the official splits.mat.")
    for split, indices in out.items():
        if len(set(indices)) != len(indices):
            raise UserError(f"{path}: the {split} split's indices name an image twice; use the "
                            "official splits.mat.")
    return out


class LabelledMat:
    """``nyu_depth_v2_labeled.mat``, opened with h5py and checked."""

    def __init__(self, raw_root):
        h5py = optional_import("h5py", "Reading nyu_depth_v2_labeled.mat")
        self.path = os.path.join(raw_root, FILES["mat"])
        if not os.path.exists(self.path):
            raise UserError(f"Missing file {self.path}: download nyu_depth_v2_labeled.mat "
                            "into RAW_ROOT.")
        try:
            self.file = h5py.File(self.path, "r")
        except OSError:
            raise UserError(f"{self.path} is not an HDF5 (MATLAB v7.3) file: download "
                            "nyu_depth_v2_labeled.mat again (an older MATLAB format will not "
                            "do).") from None
        missing = [k for k in MAT_KEYS if k not in self.file]
        if missing:
            raise UserError(f"{self.path} lacks {', '.join(missing)}: is it the labelled "
                            "NYUv2 file?")
        images, depths, labels = (self.file[k] for k in MAT_KEYS)
        n, channels, width, height = images.shape
        per_image = (n, width, height)
        if channels != 3 or depths.shape != per_image or labels.shape != per_image:
            raise UserError(f"{self.path}: images {images.shape}, depths {depths.shape}, labels "
                            f"{labels.shape} do not agree ((N, 3, W, H), (N, W, H), (N, W, H)).")
        self.size = n

    def sample(self, k):
        """``(rgb (H, W, 3) uint8, depth (H, W) metres, labels (H, W))`` of image ``k``."""
        return (np.transpose(self.file["images"][k], (2, 1, 0)).astype(np.uint8),
                np.asarray(self.file["depths"][k], np.float64).T,
                np.asarray(self.file["labels"][k]).T.astype(np.int64))


def _given_normals(folder, k, shape):
    path = os.path.join(folder, f"{k}.npy")
    try:
        normal = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"Missing file {path} (--normals: one {k}.npy per image).") from None
    except ValueError as e:
        raise UserError(f"{path} is not a readable .npy file ({e}).") from None
    if normal.shape != (*shape, 3) or not np.all(np.isfinite(normal)):
        raise UserError(f"{path}: normals must be finite, of shape {(*shape, 3)}; found "
                        f"{normal.shape}.")
    return normal.astype(np.float32)


def plan(raw_root, size, splits, normals=None):
    """Everything to write: ``(samples by split, convert function, record)``."""
    table, mappings = label_table(raw_root)
    indices = split_indices(raw_root)
    mat = LabelledMat(raw_root)
    for split in splits:
        bad = [k + 1 for k in indices[split] if not 0 <= k < mat.size]
        if bad:
            raise UserError(f"{os.path.join(raw_root, FILES['splits'])}: {split} index {bad[0]} "
                            f"is outside the {mat.size} images of {FILES['mat']}.")
    if normals is not None and not os.path.isdir(normals):
        raise UserError(f"--normals {normals} is not a folder.")

    def convert(k):
        rgb, depth, labels = mat.sample(k)
        if labels.max() >= len(table) or labels.min() < 0:
            raise UserError(f"{mat.path}: image {k + 1} has label {labels.max()}, outside "
                            f"0..{len(table) - 1} of classMapping40.mat.")
        if not np.all(np.isfinite(depth)):
            raise UserError(f"{mat.path}: image {k + 1} has NaN or Inf depth.")
        depth = np.where(depth > 0, depth, 0.0)
        normal = (_given_normals(normals, k, depth.shape) if normals
                  else normals_from_depth(depth))
        return {
            "image": image_unit(rgb, size),
            "label": table[nearest(labels, size)].astype(np.float32),
            "depth": nearest(depth, size).astype(np.float32)[..., None],
            "normal": nearest(normal, size),
        }

    samples = {split: [(str(k + 1), k) for k in indices[split]] for split in splits}
    record = {
        "conventions": {
            "image": "RGB float32 in [0, 1]: 8-bit pixels / 255 after PIL bilinear resizing",
            "label": "13 classes " + ", ".join(NYUV2_CLASSES) + " as 0..12 (894 -> 40 -> 13 by "
                     "the mapping files); unlabelled (0) -> -1 (ignore)",
            "ignore_label": IGNORE,
            "depth_units": "metres",
            "invalid_depth": 0,
            "normal": (f"from --normals {normals}" if normals else
                       f"plane fit over a {WINDOW}x{WINDOW} window at full resolution, Kinect "
                       f"intrinsics {KINECT}, camera frame x right, y down, z forward, facing "
                       "the camera; all-zero = invalid"),
            "resize": "nearest (the input pixel under each output pixel's centre) for labels, "
                      "depth and normals",
            "splits": "train = splits.mat trainNdxs, val = testNdxs (the test split)",
        },
        "mappings": mappings,
    }
    return samples, convert, record
