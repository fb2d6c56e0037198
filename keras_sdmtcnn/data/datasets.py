"""From a recipe's ``data`` section to training and validation ``tf.data`` pipelines.

Each format module yields batches of ``(image, {task: target})``; this
module picks the module, fills the format's defaults (classes, ignore label)
and returns both splits with a :class:`DatasetInfo`.
"""

import dataclasses

from keras_sdmtcnn.data import scenes, taskonomy


@dataclasses.dataclass
class DatasetInfo:
    root: str
    num_classes: int
    ignore_label: int
    class_names: tuple | None
    num_train: int
    num_val: int


def format_defaults(data):
    """``(num_classes, ignore_label, class_names)`` of the recipe's format."""
    if data.format == "scenes":
        defaults = (scenes.NUM_CLASSES, scenes.IGNORE_LABEL, scenes.CLASS_NAMES)
    else:
        defaults = (taskonomy.NUM_CLASSES, taskonomy.IGNORE_LABEL, None)
    num_classes = data.num_classes if data.num_classes is not None else defaults[0]
    ignore = data.ignore_label if data.ignore_label is not None else defaults[1]
    return num_classes, ignore, defaults[2]


def dataset_root(data, verbose=True):
    """The dataset root; for ``scenes``, generates the cached dataset if needed."""
    if data.format == "scenes":
        s = data.scenes
        return scenes.ensure_scenes(
            s.cache_dir, s.num_train, s.num_val, s.height, s.width, s.seed,
            verbose=verbose,
        )
    return data.root


def build_datasets(recipe, verbose=True, splits=("train", "val")):
    """Returns ``({split: dataset}, DatasetInfo)`` for the recipe's data.

    The training split is shuffled (seeded by ``training.seed``) and flipped
    if ``data.flip``; the validation split is neither.
    """
    data, training = recipe.data, recipe.training
    root = dataset_root(data, verbose=verbose)
    num_classes, ignore, names = format_defaults(data)
    datasets, sizes = {}, {}
    for split in splits:
        train = split == "train"
        ds, n = taskonomy.taskonomy_dataset(
            root,
            data.train_split if train else data.val_split,
            list(data.tasks),
            tuple(data.image_size),
            training.batch_size,
            shuffle=train,
            flip=train and data.flip,
            image_normalization=data.image_normalization,
            target_normalization=data.target_normalization,
            seed=training.seed,
            check_all_files=data.check_all_files,
        )
        datasets[split], sizes[split] = ds, n
    info = DatasetInfo(root, num_classes, ignore, names,
                       sizes.get("train", 0), sizes.get("val", 0))
    return datasets, info
