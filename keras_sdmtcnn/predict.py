"""``python -m keras_sdmtcnn.predict MODEL IMAGE_OR_DIR... --out DIR``: predictions as pictures.

MODEL is a run directory or full-model ``.keras`` file (Teacher and Student
are shown side by side, as in the paper's Figure 2), or an exported
``.tflite``, ``.onnx`` or SavedModel (its one branch). For every PNG/JPEG
image it writes ``DIR/<image name>.png``: one row per branch, with the input,
the segmentation in a colour palette, depth in a colour map, normals as RGB,
keypoints and edges. Each tile is the model's input size, enlarged by an
integer factor (nearest) when narrower than 128 pixels; a caption strip of
``CAPTION`` pixels tops each row.

An image of another size is resized to the model's input size, and a grey or
RGBA image is converted to RGB; both are said on the console.
"""

import argparse
import os

import numpy as np

from keras_sdmtcnn import cli
from keras_sdmtcnn.errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CAPTION = 14


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
    return images


def read_image(path, size, say=print):
    """Raw RGB uint8 pixels of ``path`` at ``size`` (H, W), converting as needed."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            if image.mode != "RGB":
                say(f"{path}: {image.mode} image converted to RGB")
                image = image.convert("RGB")
            if image.size != (size[1], size[0]):
                say(f"{path}: resized from {image.size[0]}x{image.size[1]} to "
                    f"{size[1]}x{size[0]} (the model's input size)")
                image = image.resize((size[1], size[0]), Image.BILINEAR)
            return np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"Cannot read image {path}: {e}") from None


def _colour(values, cmap):
    import matplotlib

    lo, hi = np.percentile(values, 1), np.percentile(values, 99)
    scaled = np.clip((values - lo) / max(hi - lo, 1e-12), 0, 1)
    return (matplotlib.colormaps[cmap](scaled)[..., :3] * 255).astype(np.uint8)


def branch_outputs(outputs, branch, tasks, index=0):
    """Named outputs (as ``serving.py`` names them) of image ``index`` of a Keras prediction."""
    named = {}
    for task in tasks:
        y = np.asarray(outputs[f"{task}_{branch}"][index:index + 1])
        if task == "semantic":
            named["semantic_logits"] = y
            named["semantic_classes"] = y.argmax(-1)
        else:
            named[task] = y
    return named


def tiles(outputs, tasks):
    """``[(caption, HxWx3 uint8)]`` for one branch's outputs (batch of 1)."""
    import matplotlib

    out = []
    for task in tasks:
        if task == "semantic":
            classes = outputs["semantic_classes"][0]
            palette = (np.array(matplotlib.colormaps["tab20"].colors) * 255).astype(np.uint8)
            out.append(("semantic", palette[classes % len(palette)]))
        elif task == "depth":
            out.append(("depth", _colour(outputs["depth"][0, ..., 0], "magma_r")))
        elif task == "normal":
            out.append(("normal", ((outputs["normal"][0] + 1) * 127.5).clip(0, 255).astype(np.uint8)))
        else:
            out.append((task, _colour(outputs[task][0, ..., 0], "gray")))
    return out


def zoom(width):
    """The integer enlargement of tiles narrower than 128 pixels."""
    return max(1, 128 // width)


def panel(image, rows, tasks):
    """Composes the picture: one row per ``(branch, outputs)``."""
    from PIL import Image, ImageDraw

    k = zoom(image.shape[1])
    height, width = image.shape[0] * k, image.shape[1] * k
    columns = 1 + len(tiles(rows[0][1], tasks))
    canvas = Image.new("RGB", (columns * width, len(rows) * (height + CAPTION)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (branch, outputs) in enumerate(rows):
        top = r * (height + CAPTION)
        cells = [(branch, image)] + tiles(outputs, tasks)
        for c, (caption, tile) in enumerate(cells):
            tile = np.repeat(np.repeat(tile, k, axis=0), k, axis=1)
            canvas.paste(Image.fromarray(tile), (c * width, top + CAPTION))
            draw.text((c * width + 2, top + 1), caption, fill="black")
    return canvas


def predictors(model_path, recipe_path=None):
    """``(size, tasks, [(branch, fn(raw_uint8_batch) -> outputs)])`` for a model or export."""
    from keras_sdmtcnn.runtime import export_format, load_exported

    if export_format(model_path) is not None:
        runtime = load_exported(model_path)
        size = tuple(runtime.input_shape[1:3])
        dtype = runtime.input_dtype
        return size, runtime.metadata["tasks"], [
            (runtime.metadata["branch"], lambda raw: runtime(raw.astype(dtype)))
        ]
    import keras
    import tensorflow as tf

    import keras_sdmtcnn.registry  # noqa: F401  (registers the classes)
    from keras_sdmtcnn.evaluate import resolve
    from keras_sdmtcnn.recipes import load_recipe
    from keras_sdmtcnn.serving import serving_function

    model_file, recipe_file = resolve(model_path, recipe_path)
    recipe = load_recipe(recipe_file)
    model = keras.models.load_model(model_file)
    size = tuple(recipe.data.image_size)
    branches = []
    tasks = None
    for branch in ("teacher", "student"):
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

    images = list_images(inputs)
    size, tasks, branches = predictors(model_path, recipe_path)
    say = print if verbose else (lambda *_: None)
    written = []
    os.makedirs(out_dir, exist_ok=True)
    for path in images:
        raw = read_image(path, size, say)
        rows = [(branch, fn(raw[None])) for branch, fn in branches]
        picture = panel(raw, rows, tasks)
        target = os.path.join(out_dir, os.path.splitext(os.path.basename(path))[0] + ".png")
        with atomic_path(target, suffix=".png") as tmp:
            picture.save(tmp)
        written.append(target)
        say(f"wrote {target}")
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m keras_sdmtcnn.predict",
        description="Predict on images and write one picture panel per image.",
    )
    parser.add_argument("model", help="run directory, .keras, .tflite, .onnx or SavedModel")
    parser.add_argument("inputs", nargs="+", help="PNG/JPEG images or folders of them")
    parser.add_argument("--out", required=True, help="output folder for the panels")
    parser.add_argument("--recipe", help="recipe (default: the run's recipe.yaml)")
    args = parser.parse_args(argv)
    predict(args.model, args.inputs, args.out, args.recipe)


if __name__ == "__main__":
    cli.run(main)
