"""Prediction panels: what the model sees and predicts, as one picture per image.

A panel has one row per branch (Teacher and Student side by side, as in
the paper's Figure 2): the input, then each task's prediction drawn as its
task spec says (``TaskSpec.picture``): classes in a palette, maps in a
colour map, vectors as RGB. Used by ``predict`` (PNG files) and by ``fit``
(TensorBoard images every ``output.panels_every`` epochs).
"""

import numpy as np

from keras_sdmtcnn.tasks import get_task, output_name

CAPTION = 14  # pixels of the caption strip above each row


def _colour(values, cmap):
    import matplotlib

    lo, hi = np.percentile(values, 1), np.percentile(values, 99)
    scaled = np.clip((values - lo) / max(hi - lo, 1e-12), 0, 1)
    return (matplotlib.colormaps[cmap](scaled)[..., :3] * 255).astype(np.uint8)


def draw(task, outputs):
    """One HxWx3 uint8 tile of ``task``'s prediction in named outputs (batch of 1)."""
    import matplotlib

    spec = get_task(task)
    if spec.picture == "classes":
        classes = outputs[spec.classes_output][0]
        palette = (np.array(matplotlib.colormaps["tab20"].colors) * 255).astype(np.uint8)
        return palette[classes % len(palette)]
    value = outputs[task][0]
    if spec.picture == "vectors":
        return ((value + 1) * 127.5).clip(0, 255).astype(np.uint8)
    if spec.picture.startswith("map:"):
        return _colour(value[..., 0], spec.picture[len("map:"):])
    raise ValueError(f"Task {task!r} has an unknown picture kind {spec.picture!r}.")


def named_outputs(outputs, branch, tasks, index=0):
    """A Keras prediction's image ``index`` as the serving graph names its outputs."""
    named = {}
    for task in tasks:
        spec = get_task(task)
        y = np.asarray(outputs[output_name(task, branch)][index:index + 1])
        named[spec.value_output] = y
        if spec.is_classification:
            named[spec.classes_output] = y.argmax(-1)
    return named


def zoom(width):
    """The integer enlargement of tiles narrower than 128 pixels."""
    return max(1, 128 // width)


def panel(image, rows, tasks):
    """Composes the picture: one row per ``(branch, named outputs)``; returns a PIL image."""
    from PIL import Image, ImageDraw

    k = zoom(image.shape[1])
    height, width = image.shape[0] * k, image.shape[1] * k
    canvas = Image.new("RGB", ((1 + len(tasks)) * width, len(rows) * (height + CAPTION)),
                       "white")
    pen = ImageDraw.Draw(canvas)
    for r, (branch, outputs) in enumerate(rows):
        top = r * (height + CAPTION)
        cells = [(branch, image)] + [(task, draw(task, outputs)) for task in tasks]
        for c, (caption, tile) in enumerate(cells):
            tile = np.repeat(np.repeat(tile, k, axis=0), k, axis=1)
            canvas.paste(Image.fromarray(tile), (c * width, top + CAPTION))
            pen.text((c * width + 2, top + 1), caption, fill="black")
    return canvas
