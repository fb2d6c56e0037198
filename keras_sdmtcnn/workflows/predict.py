"""Predictions as pictures: what ``python -m keras_sdmtcnn.predict`` calls.

MODEL is a run directory or full-model ``.keras`` file (Teacher and Student
are shown side by side, as in the paper's Figure 2), or an exported
``.tflite``, ``.onnx`` or SavedModel (its one branch). For every PNG/JPEG
image it writes ``DIR/<image name>.png`` (``<name>_<extension>.png`` when two
inputs share a name): one row per branch, with the input,
the segmentation in a colour palette, depth in a colour map, normals as RGB,
keypoints and edges. Each tile is the model's input size, enlarged by an
integer factor (nearest) when narrower than 128 pixels; a caption strip tops
each row (``runs/pictures.py`` draws them).

An image of another size is resized to the model's input size, a grey or
RGBA image is converted to RGB, and a 16-bit image is scaled to 8 bits
(not clipped); each is said on the console.
"""

import os

import numpy as np

from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.runs.rundir import RunDir
from keras_sdmtcnn.tasks import BRANCHES

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
EXIF_ORIENTATION = 0x0112  # the EXIF tag a camera sets when it was held sideways


def list_images(paths):
    images = []
    for path in paths:
        if os.path.isdir(path):
            images += sorted(os.path.join(path, n) for n in os.listdir(path)
                             if n.lower().endswith(IMAGE_SUFFIXES))
        elif os.path.isfile(path):
            images.append(path)
        else:
            raise UserError(f"{path} does not exist.")
    if not images:
        raise UserError(f"No PNG or JPEG image in {', '.join(paths)}.")
    return list(dict.fromkeys(images))  # an image given twice is drawn once


def output_names(images):
    """``{image path: panel file name}``, one name per image, never two the same.

    ``photo.png`` gives ``photo.png``; when two inputs share a stem
    (``photo.png`` and ``photo.jpg``, or two folders' ``a.png``), their
    extension and then their folder's name keep them apart.
    """
    def stem(path, level):
        base, ext = os.path.splitext(os.path.basename(path))
        parts = [base] + ([ext.lstrip(".").lower()] if level >= 1 else [])
        if level >= 2:
            parts.insert(0, os.path.basename(os.path.dirname(os.path.abspath(path))))
        return "_".join(parts) + ".png"

    from collections import Counter

    names = {path: stem(path, 0) for path in images}
    for level in (1, 2):  # only the names that collide grow
        taken = Counter(names.values())
        names = {path: stem(path, level) if taken[name] > 1 else name
                 for path, name in names.items()}
    counts = Counter()
    for path in images:  # still the same (one folder's a.png and A.PNG): number them
        counts[names[path]] += 1
        if counts[names[path]] > 1:
            names[path] = f"{names[path][:-4]}_{counts[names[path]]}.png"
    return names


def read_image(path, size, say=print):
    """Raw RGB uint8 pixels of ``path`` at ``size`` (H, W), converting as needed.

    The camera's EXIF orientation is applied (a phone photo taken upright
    is predicted upright); an image over Pillow's decompression-bomb limit
    is refused.
    """
    import warnings

    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with warnings.catch_warnings():  # Pillow only warns below twice its limit
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            opened = Image.open(path)
        with opened:
            opened.load()
            image = opened
            orientation = opened.getexif().get(EXIF_ORIENTATION, 1)
            if orientation not in (None, 1):
                image = ImageOps.exif_transpose(opened)
                say(f"{path}: turned upright as its EXIF orientation ({orientation}) says")
            if image.mode.startswith("I;16") or image.mode == "I":
                # A 16-bit PNG: scale to 8 bits (Pillow's RGB conversion would clip).
                values = np.asarray(image, dtype=np.float64)
                grey = np.clip(np.round(values * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
                say(f"{path}: 16-bit {image.mode} image scaled to 8 bits")
                image = Image.fromarray(grey, "L")
            if image.mode != "RGB":
                say(f"{path}: {image.mode} image converted to RGB")
                image = image.convert("RGB")
            if image.size != (size[1], size[0]):
                say(f"{path}: resized from {image.size[1]} x {image.size[0]} to "
                    f"{size[0]} x {size[1]} (height x width, the model's input size)")
                image = image.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise UserError(f"Cannot read image {path}: {e} It is refused as a possible "
                        "decompression bomb; resize it first.") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"Cannot read image {path}: {e}") from None


def predictors(model_path, recipe_path=None):
    """``(size, tasks, [(branch, fn(raw_uint8_batch) -> outputs)])`` for a model or export."""
    from keras_sdmtcnn.deploy.runtime import export_format, load_exported

    if export_format(model_path) is not None:
        runtime = load_exported(model_path)
        size = tuple(runtime.input_shape[1:3])
        dtype = runtime.input_dtype
        return size, runtime.metadata["tasks"], [
            (runtime.metadata["branch"], lambda raw: runtime(raw.astype(dtype)))
        ]
    import tensorflow as tf

    from keras_sdmtcnn.config import load_recipe
    from keras_sdmtcnn.deploy.serving import serving_function
    from keras_sdmtcnn.training.saving import load_model

    model_file, recipe_file = RunDir.resolve(model_path, recipe_path)
    recipe = load_recipe(recipe_file)
    model = load_model(model_file)
    size = tuple(recipe.data.image_size)
    branches = []
    tasks = None
    for branch in BRANCHES:
        if not any(n.endswith(f"_{branch}") for n in model.output):
            continue
        serve, _, tasks = serving_function(model, branch, size, "uint8",
                                           recipe.data.image_normalization)

        def run(raw, serve=serve):
            return {k: v.numpy() for k, v in serve(tf.constant(raw)).items()}

        branches.append((branch, run))
    return size, tasks, branches


def predict(model_path, inputs, out_dir, recipe_path=None, verbose=1):
    """Writes one panel per image into ``out_dir``; returns their paths."""
    from keras_sdmtcnn.io import atomic_path
    from keras_sdmtcnn.runs.pictures import panel

    images = list_images(inputs)
    size, tasks, branches = predictors(model_path, recipe_path)
    say = print if verbose else (lambda *_: None)
    written = []
    os.makedirs(out_dir, exist_ok=True)
    names = output_names(images)
    for path in images:
        raw = read_image(path, size, say)
        rows = [(branch, fn(raw[None])) for branch, fn in branches]
        picture = panel(raw, rows, tasks)
        target = os.path.join(out_dir, names[path])
        with atomic_path(target, suffix=".png") as tmp:
            picture.save(tmp)
        written.append(target)
        say(f"wrote {target}")
    return written
