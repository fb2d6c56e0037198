"""The table of dataset formats: classes, ignore label, tasks, reader, pixels.

Every fact about a format that the rest of the library needs is here, once:
the recipe schema checks ``data.tasks`` against ``tasks``, the readers and
``data check`` take the class count and ignore label from here, and export
metadata takes the class names. The file layouts and encodings themselves
are documented in ``docs/data_formats.md`` and implemented by the format's
reader module (``reader``).

This module imports no TensorFlow (the recipe schema uses it).
"""

import dataclasses

NYUV2_CLASSES = ("bed", "books", "ceiling", "chair", "floor", "furniture", "objects",
                 "picture", "sofa", "table", "tv", "wall", "window")
CITYSCAPES_7 = ("flat", "construction", "object", "nature", "sky", "human", "vehicle")
SCENES_CLASSES = ("ignore", "floor", "wall", "ceiling", "box", "sphere", "cylinder")


@dataclasses.dataclass(frozen=True)
class LabelSet:
    """One set of class labels a format offers (CityScapes has several folders)."""

    folder: str | None
    num_classes: int
    class_names: tuple | None


@dataclasses.dataclass(frozen=True)
class DatasetFormat:
    """Declaration of one dataset format.

    Attributes:
        name: the value of ``data.format``.
        tasks: the tasks whose targets the format holds.
        labels: the label sets, the default first (``data.label_dir`` picks another).
        ignore_label: the label that does not count in losses and metrics.
        reader: the module under ``keras_sdmtcnn.data`` that reads it.
        needs_root: whether ``data.root`` must be given (the built-in
            scenes generate their own).
        holdout: whether ``data.val_source: holdout`` applies (formats with
            one training folder; Taskonomy chooses validation buildings).
        pixels: how images are stored: ``"uint8"`` (PNG, scaled by 1/255 on
            reading) or ``"unit_float"`` (``.npy`` already in [0, 1]).
    """

    name: str
    tasks: tuple
    labels: tuple
    ignore_label: int
    reader: str
    needs_root: bool
    holdout: bool
    pixels: str

    def label_set(self, label_dir=None):
        """The label set read from ``label_dir`` (default: the format's default)."""
        for labels in self.labels:
            if labels.folder == label_dir:
                return labels
        return self.labels[0]


FORMATS = {
    "scenes": DatasetFormat(
        name="scenes", tasks=("semantic", "depth", "normal", "keypoints", "edges"),
        labels=(LabelSet(None, len(SCENES_CLASSES), SCENES_CLASSES),),
        ignore_label=0, reader="taskonomy", needs_root=False, holdout=False, pixels="uint8",
    ),
    "taskonomy": DatasetFormat(
        name="taskonomy", tasks=("semantic", "depth", "normal", "keypoints", "edges"),
        labels=(LabelSet(None, 18, None),),
        ignore_label=0, reader="taskonomy", needs_root=True, holdout=False, pixels="uint8",
    ),
    "nyuv2": DatasetFormat(
        name="nyuv2", tasks=("semantic", "depth", "normal"),
        labels=(LabelSet(None, 13, NYUV2_CLASSES),),
        ignore_label=-1, reader="mtan", needs_root=True, holdout=True, pixels="unit_float",
    ),
    "cityscapes": DatasetFormat(
        name="cityscapes", tasks=("semantic", "depth"),
        labels=(LabelSet(None, 7, CITYSCAPES_7), LabelSet("label_7", 7, CITYSCAPES_7),
                LabelSet("label", 7, CITYSCAPES_7), LabelSet("label_19", 19, None),
                LabelSet("label_2", 2, None)),
        ignore_label=-1, reader="mtan", needs_root=True, holdout=True, pixels="unit_float",
    ),
}
FORMAT_NAMES = tuple(FORMATS)


# Taskonomy's folder of each task's files (older releases' names after the
# first); the built-in scenes are written with the first names.
TASKONOMY_DOMAINS = {
    "rgb": ("rgb",),
    "semantic": ("segment_semantic", "segmentsemantic"),
    "depth": ("depth_zbuffer",),
    "normal": ("normal",),
    "keypoints": ("keypoints2d",),
    "edges": ("edge_texture",),
}


def get_format(name):
    """The :class:`DatasetFormat` called ``name`` (a ``ValueError`` names the choices)."""
    if name not in FORMATS:
        raise ValueError(f"Unknown data format {name!r}; allowed: {', '.join(FORMAT_NAMES)}.")
    return FORMATS[name]


def format_defaults(data):
    """``(num_classes, ignore_label, class_names)`` of a recipe's ``data`` section.

    The recipe's ``num_classes`` and ``ignore_label`` win over the format's.
    """
    fmt = get_format(data.format)
    labels = fmt.label_set(data.label_dir)
    num_classes = data.num_classes if data.num_classes is not None else labels.num_classes
    ignore = data.ignore_label if data.ignore_label is not None else fmt.ignore_label
    return num_classes, ignore, labels.class_names
