"""CityScapes from the official archives to MTAN's ``.npy`` layout.

Input, as the official archives unpack (``RAW_ROOT``)::

    leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png      8-bit RGB, 1024x2048
    gtFine/{split}/{city}/{stem}_gtFine_labelIds.png       8-bit label ids (0..33)
    disparity/{split}/{city}/{stem}_disparity.png          16-bit: p > 0 is (p - 1) / 256 px
    camera/{split}/{city}/{stem}_camera.json               baseline (m), fx (px): for metres

Output (``OUT_ROOT/{train,val}/``): ``image/`` (float [0, 1]), ``label_7/``
(the label table's categories flat .. vehicle as 0..6, void -> -1),
``label_19/`` (train ids, 255 -> -1), ``depth/`` (H, W, 1), 0 = invalid.

Depth is stored as one of:

- ``disparity_px`` (default): disparity in pixels **at the stored
  resolution**, ``(p - 1) / 256 / f`` with ``f`` the horizontal downscale
  factor (disparity is a horizontal distance, so it shrinks with the width);
- ``metres``: ``baseline * fx / ((p - 1) / 256)`` from the camera file of each
  image (the full-resolution disparity and focal length).

``p = 0`` (no match) and ``p = 1`` (disparity 0, infinitely far) are both
stored as 0, the invalid value of the layout. The labels come from
``cityscapesscripts`` (the official label table), not a copy of it.
"""

import json
import os
from importlib.metadata import version

import numpy as np

from keras_sdmtcnn.data.formats import CITYSCAPES_7
from keras_sdmtcnn.data.prepare.arrays import image_unit, nearest
from keras_sdmtcnn.data.prepare.common import listed, optional_import, pair_up, read_png
from keras_sdmtcnn.errors import UserError

DEFAULT_SIZE = (128, 256)
SPLITS = ("train", "val")
DEPTH_UNITS = ("disparity_px", "metres")
FOLDERS_OUT = ("image", "label_7", "label_19", "depth")  # the keys convert() returns
IGNORE = -1
FOLDERS = {
    "image": ("leftImg8bit", "_leftImg8bit.png"),
    "label": ("gtFine", "_gtFine_labelIds.png"),
    "disparity": ("disparity", "_disparity.png"),
    "camera": ("camera", "_camera.json"),
}


def label_tables():
    """From the official label table: ``(lut_7, lut_19, known, record)``.

    ``lut_7`` and ``lut_19`` map a label id (0..255) to a class or -1
    (ignore); ``known`` marks the ids the table has; ``record`` is the two
    mappings for ``prepare.json``.
    """
    labels = optional_import("cityscapesscripts.helpers.labels",
                             "Reading CityScapes labels").labels
    lut7 = np.full(256, IGNORE, np.int64)
    lut19 = np.full(256, IGNORE, np.int64)
    known = np.zeros(256, bool)
    categories = {}
    for label in labels:
        if label.id < 0:  # "license plate": not in the labelIds images
            continue
        known[label.id] = True
        if label.categoryId > 0:
            lut7[label.id] = label.categoryId - 1
            categories[label.categoryId - 1] = label.category
        if label.trainId not in (255, -1):
            lut19[label.id] = label.trainId
    if tuple(categories[i] for i in range(len(categories))) != CITYSCAPES_7:
        raise UserError(
            "The installed cityscapesscripts' categories "
            f"({[categories[i] for i in sorted(categories)]}) differ from this library's 7 "
            f"classes {list(CITYSCAPES_7)}: install cityscapesscripts>=2.2.")
    described = {
        "label_7": {str(label.id): int(lut7[label.id]) for label in labels if label.id >= 0},
        "label_19": {str(label.id): int(lut19[label.id]) for label in labels if label.id >= 0},
    }
    return lut7, lut19, known, described


def find_samples(raw_root, split, depth_units):
    """``[(stem, {kind: path})]`` of one split, every kind paired by name."""
    kinds = ["image", "label", "disparity"] + (["camera"] if depth_units == "metres" else [])
    top = os.path.join(raw_root, FOLDERS["image"][0], split)
    cities = sorted(os.listdir(top)) if os.path.isdir(top) else []
    if not cities:
        raise UserError(f"Missing folder {top} or it holds no city: unpack leftImg8bit_trainvaltest"
                        ".zip into RAW_ROOT (or give the right RAW_ROOT).")
    samples = []
    for city in cities:
        groups = {kind: listed(os.path.join(raw_root, FOLDERS[kind][0], split, city),
                               FOLDERS[kind][1], f"CityScapes {kind}") for kind in kinds}
        pair_up(groups, os.path.join(split, city))
        if not groups["image"]:
            raise UserError(f"{os.path.join(top, city)} holds no *_leftImg8bit.png image.")
        samples += [(stem, {kind: groups[kind][stem] for kind in kinds})
                    for stem in groups["image"]]
    return samples


def _camera(path):
    try:
        with open(path) as f:
            camera = json.load(f)
        baseline, fx = float(camera["extrinsic"]["baseline"]), float(camera["intrinsic"]["fx"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: no usable extrinsic.baseline and intrinsic.fx ({e!r}).") \
            from None
    if not (baseline > 0 and fx > 0):
        raise UserError(f"{path}: baseline {baseline} and fx {fx} must be positive.")
    return baseline, fx


def convert(paths, size, depth_units, tables):
    """One sample's arrays: ``{relative folder: array}``."""
    lut7, lut19, known, _ = tables
    rgb = read_png(paths["image"], "CityScapes image")
    if rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise UserError(f"{paths['image']} is not an RGB image (shape {rgb.shape}).")
    ids = read_png(paths["label"], "CityScapes labelIds")
    p = read_png(paths["disparity"], "CityScapes disparity", bits=16).astype(np.int64)
    full = rgb.shape[:2]
    for what, array in (("labelIds", ids), ("disparity", p)):
        if array.shape[:2] != full or array.ndim != 2:
            raise UserError(f"{paths['label' if what == 'labelIds' else 'disparity']}: {what} "
                            f"of shape {array.shape} does not match its image {full}.")
    if ids.max() > 255 or np.any(~known[np.clip(ids, 0, 255)]):
        unknown = sorted(set(np.unique(ids).tolist()) - set(np.flatnonzero(known).tolist()))
        raise UserError(f"{paths['label']}: label ids {unknown[:5]} are not in the CityScapes "
                        "label table (is it a *_labelIds.png?).")
    ids, p = nearest(ids, size), nearest(p, size)
    disparity = np.where(p > 0, (p - 1) / 256.0, 0.0)  # pixels at full resolution
    if depth_units == "metres":
        baseline, fx = _camera(paths["camera"])
        depth = np.where(disparity > 0, baseline * fx / np.maximum(disparity, 1e-12), 0.0)
    else:
        depth = disparity * (size[1] / full[1])
    return {
        "image": image_unit(rgb, size),
        "label_7": lut7[ids].astype(np.float32),
        "label_19": lut19[ids].astype(np.float32),
        "depth": depth.astype(np.float32)[..., None],
    }


def plan(raw_root, size, splits, depth_units="disparity_px"):
    """Everything to write: ``(samples by split, convert(paths) function, record)``."""
    if depth_units not in DEPTH_UNITS:
        raise UserError(f"--depth must be one of {', '.join(DEPTH_UNITS)}, got {depth_units!r}.")
    tables = label_tables()
    samples = {split: find_samples(raw_root, split, depth_units) for split in splits}

    record = {
        "conventions": {
            "image": "RGB float32 in [0, 1]: 8-bit pixels / 255 after PIL bilinear resizing",
            "label_7": "CityScapes categories flat, construction, object, nature, sky, human, "
                       "vehicle as 0..6; void -> -1 (ignore)",
            "label_19": "CityScapes train ids 0..18; 255 -> -1 (ignore)",
            "ignore_label": IGNORE,
            "depth_units": depth_units,
            "depth": ("disparity in pixels at the stored resolution: (p - 1) / 256 / "
                      "(full width / stored width)" if depth_units == "disparity_px" else
                      "metres: baseline * fx / ((p - 1) / 256) from each image's camera file"),
            "invalid_depth": 0,
            "invalid_sources": "disparity PNG value 0 (no match) or 1 (disparity 0)",
            "resize": "nearest (the input pixel under each output pixel's centre) for labels "
                      "and disparity",
        },
        "mappings": tables[3],
        "cityscapesscripts": version("cityscapesscripts"),
    }
    return samples, (lambda paths: convert(paths, size, depth_units, tables)), record
