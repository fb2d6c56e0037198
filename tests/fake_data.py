"""Tiny datasets written in the real file formats, shared by the tests.

- NYUv2 / CityScapes: MTAN's ``.npy`` folders (``write_layout``).
- Taskonomy: PNGs in Taskonomy's encodings with known values (``write_sample``).
"""

import os

import numpy as np
from PIL import Image

MTAN_SIZE = (16, 32)
TASKONOMY_SIZE = (4, 6)
H, W = TASKONOMY_SIZE


def make_sample(rng, index, fmt):
    image = rng.uniform(0, 1, (*MTAN_SIZE, 3)).astype("float32")
    classes = 13 if fmt == "nyuv2" else 7
    label = rng.integers(0, classes, MTAN_SIZE).astype("float32")
    label[0, :4] = -1  # ignore
    depth = rng.uniform(*((0.5, 5) if fmt == "nyuv2" else (0.01, 0.49)), (*MTAN_SIZE, 1)).astype("float32")
    depth[1, :3] = 0  # invalid
    normal = rng.normal(size=(*MTAN_SIZE, 3)).astype("float32")
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    normal[2, :5] = 0  # invalid
    return {"image": image, "label": label, "depth": depth, "normal": normal}


def write_layout(root, fmt, n_train=6, n_val=3, label_folder=None, seed=0):
    rng = np.random.default_rng(seed)
    written = {}
    for split, n in (("train", n_train), ("val", n_val)):
        for i in range(n):
            sample = make_sample(rng, i, fmt)
            for key, array in sample.items():
                if fmt == "cityscapes" and key == "normal":
                    continue
                folder = key
                if key == "label" and fmt == "cityscapes":
                    folder = label_folder or "label_7"
                os.makedirs(os.path.join(root, split, folder), exist_ok=True)
                np.save(os.path.join(root, split, folder, f"{i}.npy"), array)
            written[(split, i)] = sample
    return written


def _save(root, domain, building, point, array):
    folder = os.path.join(root, domain, building)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, f"point_{point}_view_0_domain_{domain}.png")
    Image.fromarray(array).save(path)
    return path


def write_sample(root, building="b1", point=0, seg_domain="segment_semantic",
                 edges_8bit=False):
    """One sample in the real Taskonomy encodings, with known values."""
    rgb = np.arange(H * W * 3, dtype=np.uint8).reshape(H, W, 3)
    seg = np.array([[0, 1, 2, 17, 5, 0]] * H, np.uint8)
    depth = np.full((H, W), 1024, np.uint16)  # 2 m
    depth[0, 0] = 65535  # invalid
    depth[1, 1] = 1  # 1/512 m
    normal = np.zeros((H, W, 3), np.uint8)
    normal[...] = (255, 0, 128)
    normal[2, 2] = (128, 128, 128)  # invalid
    keypoints = np.full((H, W), 32768, np.uint16)
    keypoints[0, 0] = 65535
    edges = (np.full((H, W), 255, np.uint8) if edges_8bit
             else np.full((H, W), 13107, np.uint16))
    _save(root, "rgb", building, point, rgb)
    _save(root, seg_domain, building, point, seg)
    _save(root, "depth_zbuffer", building, point, depth)
    _save(root, "normal", building, point, normal)
    _save(root, "keypoints2d", building, point, keypoints)
    _save(root, "edge_texture", building, point, edges)
    return rgb


def tiny_nyuv2_recipe(root, tasks, epochs):
    """A recipe that trains a tiny model on an NYUv2 layout written by ``write_layout``."""
    from keras_sdmtcnn.config import recipe_from_dict

    return recipe_from_dict({
        "data": {"format": "nyuv2", "root": str(root), "image_size": list(MTAN_SIZE),
                 "tasks": list(tasks)},
        "model": {"width_multiplier": 0.0625, "bottleneck_filters": 64},
        "training": {"epochs": epochs, "batch_size": 2},
        "output": {"verbose": 0, "tensorboard": False},
    })


# --- Raw downloads, as the official archives and files hold them (data prepare) ---

# CityScapes label ids with known classes: (id, 7-class, 19-class).
CITYSCAPES_IDS = ((0, -1, -1), (7, 0, 0), (9, 0, -1), (11, 1, 2), (23, 4, 10), (24, 5, 11),
                  (26, 6, 13), (20, 2, 7))
CAMERA = {"extrinsic": {"baseline": 0.209313}, "intrinsic": {"fx": 2262.52, "fy": 2265.30,
                                                             "u0": 1096.98, "v0": 513.137}}


def write_cityscapes_raw(root, size=(16, 32), images=(("train", "aachen", 2),
                                                      ("val", "frankfurt", 1)), camera=True):
    """A tiny CityScapes download: ``{stem: (rgb, label ids, disparity PNG values)}``."""
    import json

    h, w = size
    rng = np.random.default_rng(5)
    written = {}
    for split, city, n in images:
        for k in range(n):
            stem = f"{city}_{k:06d}_000019"
            rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            ids = np.array([c[0] for c in CITYSCAPES_IDS], np.uint8)[
                rng.integers(0, len(CITYSCAPES_IDS), (h, w))]
            disp = rng.integers(2, 30000, (h, w)).astype(np.uint16)
            disp[0, :] = 0  # no match
            disp[1, :] = 1  # disparity 0
            files = {("leftImg8bit", "_leftImg8bit.png"): rgb,
                     ("gtFine", "_gtFine_labelIds.png"): ids,
                     ("disparity", "_disparity.png"): disp}
            for (top, suffix), array in files.items():
                folder = os.path.join(root, top, split, city)
                os.makedirs(folder, exist_ok=True)
                Image.fromarray(array).save(os.path.join(folder, stem + suffix))
            if camera:
                folder = os.path.join(root, "camera", split, city)
                os.makedirs(folder, exist_ok=True)
                with open(os.path.join(folder, stem + "_camera.json"), "w") as f:
                    json.dump(CAMERA, f)
            written[(split, stem)] = (rgb, ids, disp)
    return written


def plane_depth(size, normal, offset, intrinsics):
    """Depth (metres) of the plane ``normal . P = -offset`` seen by a pinhole camera."""
    h, w = size
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([(u - intrinsics["cx"]) / intrinsics["fx"],
                     (v - intrinsics["cy"]) / intrinsics["fy"], np.ones_like(u)], -1)
    z = -offset / (rays @ np.asarray(normal, np.float64))
    return np.where((z > 0) & (z < 10), z, 0.0)


def write_nyuv2_raw(root, size=(24, 32), n=3, train=(1, 3), test=(2,)):
    """A tiny NYUv2 download: the labelled ``.mat`` (HDF5 with a MATLAB header) and the
    split and mapping files. Returns ``(rgb, depth, labels, map40, map13)``, (N, H, W...)."""
    import h5py
    from scipy.io import savemat

    from keras_sdmtcnn.data.prepare.nyuv2 import KINECT

    os.makedirs(root, exist_ok=True)
    h, w = size
    rng = np.random.default_rng(9)
    rgb = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    labels = rng.integers(0, 895, (n, h, w)).astype(np.uint16)
    normal = np.array([0.1, -1.0, -0.2]) / np.linalg.norm([0.1, -1.0, -0.2])
    depth = np.stack([plane_depth(size, normal, 1.0 + i, {**KINECT, "cx": w / 2, "cy": 2.0})
                      for i in range(n)])
    depth[:, 0, :3] = 0  # invalid
    path = os.path.join(root, "nyu_depth_v2_labeled.mat")
    with h5py.File(path, "w", userblock_size=512) as f:
        f["images"] = rgb.transpose(0, 3, 2, 1)  # MATLAB's (N, 3, W, H)
        f["depths"] = depth.transpose(0, 2, 1).astype(np.float32)
        f["labels"] = labels.transpose(0, 2, 1)
    with open(path, "r+b") as f:
        f.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024"
                b" HDF5 schema 1.00 .")
    map40 = rng.integers(1, 41, 894)
    map13 = rng.integers(1, 14, 40)
    savemat(os.path.join(root, "classMapping40.mat"), {"mapClass": map40[None, :].astype(float)})
    savemat(os.path.join(root, "class13Mapping.mat"),
            {"classMapping13": {"labels13": map13[None, :].astype(np.uint8),
                                "labelName": np.array(["bed"] * 13, dtype=object)}})
    savemat(os.path.join(root, "splits.mat"),
            {"trainNdxs": np.array(train, float)[:, None],
             "testNdxs": np.array(test, float)[:, None]})
    return rgb, depth, labels, map40, map13
