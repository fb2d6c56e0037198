"""The built-in dataset: procedural indoor scenes, ray-cast in numpy.

Each scene is a room (floor, walls, ceiling) holding a few boxes, spheres and
cylinders, seen by a pinhole camera from a random position and direction
under a random directional light. From the same geometry come all five tasks,
so they are physically consistent:

- ``semantic``: 1 floor, 2 wall, 3 ceiling, 4 box, 5 sphere, 6 cylinder; 0
  (ignore) where a surface is seen at a grazing angle (``|cos| < 0.08``),
  where real sensors and annotators are unreliable. 7 output channels, as
  Taskonomy's 18 include its ignore label 0.
- ``depth``: z-buffer depth in metres (along the camera axis); invalid at the
  grazing pixels.
- ``normal``: unit normals in the camera frame (x right, y up, z towards the
  viewer); invalid at the grazing pixels.
- ``rgb``: per-object colour, a procedural texture (checkers, stripes,
  blotches), Lambertian shading plus ambient light, and Gaussian noise.
- ``edges`` and ``keypoints``, derived from the RGB as Taskonomy derives
  them: texture edges as the Sobel gradient magnitude of the blurred grey
  image (Canny without non-maximum suppression), keypoints as a Harris corner
  response map (Taskonomy uses SURF's response, which scikit-image lacks).

:func:`write_scenes` stores a dataset in the **Taskonomy layout and
encodings** (see ``docs/data_formats.md``), so the built-in data goes through the
same reader as real Mini-Taskonomy. :func:`ensure_scenes` generates it once
into a cache directory: into a temporary folder renamed into place when
complete, so a half-written cache is never mistaken for a complete one.
"""

import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image
from skimage import feature, filters

from keras_sdmtcnn.data.formats import FORMATS, TASKONOMY_DOMAINS
from keras_sdmtcnn.io import temp_dir_beside

IGNORE_LABEL = FORMATS["scenes"].ignore_label  # class ids: data/formats.py, SCENES_CLASSES
GRAZING_COS = 0.08
COMPLETE_MARKER = "COMPLETE.json"
# Scenes rendered at once by write_scenes (one per core, at most 4).
RENDER_THREADS = max(1, min(4, os.cpu_count() or 1))


def render_scene(seed, height=96, width=128):
    """Renders one scene. Deterministic for ``seed``.

    Returns a dict of numpy arrays: ``rgb`` uint8 (H, W, 3), ``semantic``
    uint8 (H, W), ``depth`` float32 (H, W) metres with 0 = invalid,
    ``normal`` float32 (H, W, 3) with zeros = invalid, ``edges`` and
    ``keypoints`` float32 (H, W) in [0, 1].
    """
    rng = np.random.default_rng(seed)
    room = np.array([rng.uniform(2.5, 4.0), rng.uniform(2.4, 3.0), rng.uniform(2.5, 4.0)])
    # Camera: inside the room, eye height, looking roughly horizontally.
    origin = np.array([
        rng.uniform(-0.6, 0.6) * room[0], rng.uniform(1.2, 1.8),
        rng.uniform(-0.6, 0.6) * room[2],
    ])
    yaw, pitch = rng.uniform(-np.pi, np.pi), rng.uniform(-0.45, -0.1)
    rotation = _rotation(yaw, pitch)
    focal = 0.5 * width / np.tan(np.radians(rng.uniform(55, 70)) / 2)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    rays_cam = np.stack(
        [(u + 0.5 - width / 2) / focal, -(v + 0.5 - height / 2) / focal,
         -np.ones_like(u)], -1
    ).reshape(-1, 3)
    ray_len = np.linalg.norm(rays_cam, axis=-1)
    dirs = (rays_cam / ray_len[:, None]) @ rotation.T

    t, normal, label, obj = _intersect_room(origin, dirs, room)
    objects = _random_objects(rng, room, origin, rotation)
    for k, (kind, params) in enumerate(objects, start=1):
        hit_t, hit_n = _INTERSECT[kind](origin, dirs, params)
        closer = hit_t < t
        t = np.where(closer, hit_t, t)
        normal = np.where(closer[:, None], hit_n, normal)
        label = np.where(closer, _KIND_LABEL[kind], label)
        obj = np.where(closer, 10 + k, obj)

    points = origin + t[:, None] * dirs
    facing = -np.sum(normal * dirs, axis=-1)
    grazing = facing < GRAZING_COS
    label = np.where(grazing, IGNORE_LABEL, label)

    colours = rng.uniform(0.15, 0.95, size=(20, 3))
    albedo = colours[obj] * _texture(points, obj, rng)[:, None]
    light = rotation @ np.array([0.0, 0.0, 1.0]) * 0.3 + np.array(
        [rng.uniform(-0.5, 0.5), 1.0, rng.uniform(-0.5, 0.5)]
    )
    light /= np.linalg.norm(light)
    ambient = rng.uniform(0.25, 0.4)
    shade = ambient + (1 - ambient) * np.clip(normal @ light, 0, None)
    rgb = albedo * shade[:, None]
    rgb = rgb.reshape(height, width, 3) + rng.normal(0, 0.02, (height, width, 3))
    rgb = (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)

    depth = (t / ray_len).reshape(height, width)  # distance -> z-buffer depth
    normal_cam = (normal @ rotation).reshape(height, width, 3)
    grazing = grazing.reshape(height, width)
    depth = np.where(grazing, 0.0, depth).astype(np.float32)
    normal_cam = np.where(grazing[..., None], 0.0, normal_cam).astype(np.float32)

    grey = rgb.astype(np.float64).mean(-1) / 255.0
    blurred = filters.gaussian(grey, sigma=1.0)
    edges = np.clip(filters.sobel(blurred) * 4.0, 0, 1)
    harris = feature.corner_harris(grey, sigma=1.5)
    keypoints = np.clip(harris * 60.0, 0, 1)
    return {
        "rgb": rgb,
        "semantic": label.reshape(height, width).astype(np.uint8),
        "depth": depth,
        "normal": normal_cam,
        "edges": edges.astype(np.float32),
        "keypoints": keypoints.astype(np.float32),
    }


def _rotation(yaw, pitch):
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    r_yaw = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    return r_yaw @ r_pitch


def _intersect_room(origin, dirs, room):
    lo = np.array([-room[0], 0.0, -room[2]])
    hi = np.array([room[0], room[1], room[2]])
    with np.errstate(divide="ignore", invalid="ignore"):
        bound = np.where(dirs > 0, hi, lo)
        t_axis = (bound - origin) / dirs
    t_axis = np.where(np.isfinite(t_axis) & (t_axis > 0), t_axis, np.inf)
    axis = np.argmin(t_axis, axis=-1)
    t = t_axis[np.arange(len(dirs)), axis]
    normal = np.zeros_like(dirs)
    normal[np.arange(len(dirs)), axis] = -np.sign(dirs[np.arange(len(dirs)), axis])
    label = np.where(axis == 1, np.where(dirs[:, 1] < 0, 1, 3), 2)
    obj = np.where(axis == 1, np.where(dirs[:, 1] < 0, 1, 3), 2 + (axis == 2) * 2)
    return t, normal, label, obj


def _random_objects(rng, room, origin, rotation):
    # Objects stand on the floor, mostly in the camera's field of view.
    forward = rotation @ np.array([0.0, 0.0, -1.0])
    forward = np.array([forward[0], 0.0, forward[2]]) / np.hypot(forward[0], forward[2])
    side = np.array([-forward[2], 0.0, forward[0]])
    objects = []
    for _ in range(rng.integers(3, 7)):
        kind = ("box", "sphere", "cylinder")[rng.integers(3)]
        size = rng.uniform(0.3, 0.75)
        distance = rng.uniform(size + 1.0, 4.5)
        centre = origin + forward * distance + side * rng.uniform(-0.6, 0.6) * distance
        centre[0] = np.clip(centre[0], -room[0] + size, room[0] - size)
        centre[2] = np.clip(centre[2], -room[2] + size, room[2] - size)
        centre[1] = 0.0
        if kind == "box":
            half = np.array([size, rng.uniform(0.2, 0.8), size * rng.uniform(0.5, 1.2)])
            centre[1] = half[1]
            objects.append(("box", (centre, half, rng.uniform(0, np.pi))))
        elif kind == "sphere":
            centre[1] = size + rng.uniform(0, 0.8)
            objects.append(("sphere", (centre, size)))
        else:
            objects.append(("cylinder", (centre, size * 0.6, rng.uniform(0.4, 1.8))))
    return objects


def _sphere(origin, dirs, params):
    centre, radius = params
    oc = origin - centre
    b = dirs @ oc
    disc = b * b - (oc @ oc - radius * radius)
    with np.errstate(invalid="ignore"):
        t = -b - np.sqrt(disc)
    t = np.where((disc > 0) & (t > 1e-6), t, np.inf)
    points = origin + np.where(np.isfinite(t), t, 0)[:, None] * dirs
    return t, (points - centre) / radius


def _box(origin, dirs, params):
    centre, half, yaw = params
    rot = _rotation(yaw, 0.0)
    o = (origin - centre) @ rot
    d = dirs @ rot
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-half - o) / d
        t2 = (half - o) / d
    t_near = np.minimum(t1, t2)
    t_far = np.maximum(t1, t2)
    axis = np.argmax(t_near, axis=-1)
    t_min = t_near.max(-1)
    hit = (t_min <= t_far.min(-1)) & (t_min > 1e-6)
    t = np.where(hit, t_min, np.inf)
    n = np.zeros_like(d)
    rows = np.arange(len(d))
    n[rows, axis] = -np.sign(d[rows, axis])
    return t, n @ rot.T


def _cylinder(origin, dirs, params):
    centre, radius, height = params
    ox, oz = origin[0] - centre[0], origin[2] - centre[2]
    dx, dz = dirs[:, 0], dirs[:, 2]
    a = dx * dx + dz * dz
    b = dx * ox + dz * oz
    disc = b * b - a * (ox * ox + oz * oz - radius * radius)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_side = (-b - np.sqrt(disc)) / a
    y = origin[1] + t_side * dirs[:, 1]
    t_side = np.where((disc > 0) & (t_side > 1e-6) & (y >= 0) & (y <= height), t_side, np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_cap = (height - origin[1]) / dirs[:, 1]
    cx, cz = ox + t_cap * dx, oz + t_cap * dz
    t_cap = np.where((t_cap > 1e-6) & (cx * cx + cz * cz <= radius * radius), t_cap, np.inf)
    side = t_side <= t_cap
    t = np.minimum(t_side, t_cap)
    tf_ = np.where(np.isfinite(t_side), t_side, 0)
    n_side = np.stack([(ox + tf_ * dx) / radius, np.zeros_like(dx), (oz + tf_ * dz) / radius], -1)
    n_cap = np.broadcast_to(np.array([0.0, 1.0, 0.0]), n_side.shape)
    return t, np.where(side[:, None], n_side, n_cap)


_INTERSECT = {"box": _box, "sphere": _sphere, "cylinder": _cylinder}
_KIND_LABEL = {"box": 4, "sphere": 5, "cylinder": 6}


def _texture(points, obj, rng):
    freq = rng.uniform(1.5, 4.0)
    checker = (np.floor(points[:, 0] * freq) + np.floor(points[:, 2] * freq)) % 2
    stripes = (np.floor(points[:, 1] * freq * 2 + points[:, 0] + points[:, 2]) % 2)
    blotch = 0.5 + 0.5 * np.sin(points @ rng.normal(0, 6, 3)) * np.sin(
        points @ rng.normal(0, 6, 3)
    )
    tex = np.where(obj == 1, 0.65 + 0.35 * checker,
                   np.where((obj == 2) | (obj == 4), 0.75 + 0.25 * stripes,
                            0.7 + 0.3 * blotch))
    return tex


# ----------------------------------------------------------------------------
# Writing in the Taskonomy layout.

TASKONOMY_DIRS = {key: names[0] for key, names in TASKONOMY_DOMAINS.items()}


def encode_taskonomy(sample):
    """Encodes one rendered sample as Taskonomy's PNG arrays (see docs/data_formats.md)."""
    depth = np.where(sample["depth"] > 0, np.round(sample["depth"] * 512.0), 65535)
    normal = sample["normal"]
    invalid = ~np.any(normal != 0, axis=-1)
    normal8 = np.clip(np.round((normal + 1.0) * 127.5), 0, 255)
    normal8[invalid] = 128
    return {
        "rgb": sample["rgb"],
        "semantic": sample["semantic"].astype(np.uint8),
        "depth": np.clip(depth, 0, 65535).astype(np.uint16),
        "normal": normal8.astype(np.uint8),
        "keypoints": np.round(sample["keypoints"] * 65535).astype(np.uint16),
        "edges": np.round(sample["edges"] * 65535).astype(np.uint16),
    }


def taskonomy_path(root, key, building, point, view):
    folder = TASKONOMY_DIRS[key]
    return os.path.join(
        root, folder, building, f"point_{point}_view_{view}_domain_{folder}.png"
    )


def write_scenes(root, num_train, num_val, height=96, width=128, seed=0,
                 views_per_building=10, progress=None):
    """Renders ``num_train + num_val`` scenes into ``root`` in the Taskonomy layout.

    Every ``views_per_building`` consecutive images share a building; train
    and val buildings are disjoint and listed in ``root/splits/{train,val}.txt``.
    """
    total = num_train + num_val
    splits = {"train": [], "val": []}
    places = []
    for i in range(total):
        split = "train" if i < num_train else "val"
        index = i if split == "train" else i - num_train
        building = f"{split}{index // views_per_building:03d}"
        if building not in splits[split]:
            splits[split].append(building)
        places.append((building, index % views_per_building))

    def write_one(i):
        building, point = places[i]
        sample = encode_taskonomy(render_scene(seed * 1_000_003 + i, height, width))
        for key, array in sample.items():
            path = taskonomy_path(root, key, building, point, 0)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            Image.fromarray(array).save(path, compress_level=1)

    # Threads, not processes: numpy's array loops and zlib release the GIL,
    # so two threads render and write 1.85x as fast on the project's 2-core
    # CPU, with no process start-up. Each scene depends on its seed alone,
    # so the files are the same bytes in any order.
    pool = ThreadPoolExecutor(max_workers=RENDER_THREADS)
    try:
        for done, _ in enumerate(pool.map(write_one, range(total)), start=1):
            if progress is not None:
                progress(done, total)
    finally:
        pool.shutdown(cancel_futures=True)  # after an error or Ctrl-C, start no more scenes
    os.makedirs(os.path.join(root, "splits"), exist_ok=True)
    for split, buildings in splits.items():
        with open(os.path.join(root, "splits", f"{split}.txt"), "w") as f:
            f.write("\n".join(buildings) + "\n")


def ensure_scenes(cache_dir, num_train, num_val, height=96, width=128, seed=0,
                  verbose=True):
    """Returns the root of the cached built-in dataset, generating it if needed.

    The dataset is written to a temporary folder beside its final place and
    renamed once complete (with a ``COMPLETE.json`` marker), so an interrupted
    generation is never taken for a finished one.
    """
    params = {"num_train": num_train, "num_val": num_val, "height": height,
              "width": width, "seed": seed, "version": 1}
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:10]
    root = os.path.join(os.path.expanduser(cache_dir), f"scenes-{digest}")
    if os.path.exists(os.path.join(root, COMPLETE_MARKER)):
        return root
    os.makedirs(os.path.dirname(root) or ".", exist_ok=True)
    tmp = temp_dir_beside(os.path.dirname(root) or ".", ".scenes-tmp-")
    try:
        bar = None
        if verbose:
            import keras

            print(f"Generating the built-in scenes dataset into {root} ...")
            bar = keras.utils.Progbar(num_train + num_val, unit_name="image")
        write_scenes(tmp, num_train, num_val, height, width, seed,
                     progress=(lambda i, n: bar.update(i)) if bar else None)
        with open(os.path.join(tmp, COMPLETE_MARKER), "w") as f:
            json.dump(params, f)
        if os.path.exists(os.path.join(root, COMPLETE_MARKER)):
            return root  # another process (a second worker) finished it meanwhile
        if os.path.exists(root):  # an incomplete leftover from an old layout
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return root
