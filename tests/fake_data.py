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
