"""From a recipe's ``data`` section to training and validation ``tf.data`` pipelines.

Each format module yields batches of ``(image, {task: target})``; this
module picks the module, fills the format's defaults (classes, ignore label)
and returns both splits with a :class:`DatasetInfo`.
"""

import dataclasses

from keras_sdmtcnn.data import mtan, scenes, taskonomy


@dataclasses.dataclass
class DatasetInfo:
    root: str
    num_classes: int
    ignore_label: int
    class_names: tuple | None
    num_train: int
    num_val: int
    notes: tuple = ()


def format_defaults(data):
    """``(num_classes, ignore_label, class_names)`` of the recipe's format."""
    if data.format == "scenes":
        defaults = (scenes.NUM_CLASSES, scenes.IGNORE_LABEL, scenes.CLASS_NAMES)
    elif data.format == "taskonomy":
        defaults = (taskonomy.NUM_CLASSES, taskonomy.IGNORE_LABEL, None)
    elif data.format == "nyuv2":
        defaults = (13, mtan.IGNORE_LABEL, mtan.NYUV2_CLASSES)
    else:
        classes = {"label_19": 19, "label_2": 2}.get(data.label_dir, 7)
        names = mtan.CITYSCAPES_7 if classes == 7 else None
        defaults = (classes, mtan.IGNORE_LABEL, names)
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

    The training split is shuffled and augmented as the recipe says (seeded
    by ``training.seed``); the validation split is neither. With
    ``data.val_source: holdout``, ``val`` is a seeded held-out part of the
    training split and ``train`` is the rest.
    """
    data, training = recipe.data, recipe.training
    root = dataset_root(data, verbose=verbose)
    num_classes, ignore, names = format_defaults(data)
    datasets, sizes, notes = {}, {}, []
    for split in splits:
        train = split == "train"
        if data.format in ("nyuv2", "cityscapes"):
            folder, indices = _mtan_split(data, root, split)
            ds, n, source = mtan.mtan_dataset(
                root, folder, data.format, list(data.tasks), tuple(data.image_size),
                training.batch_size, shuffle=train, augment=train and data.augment,
                flip=train and data.flip, seed=training.seed, cache=data.cache,
                indices=indices, label_folder=data.label_dir,
            )
            if "semantic" in data.tasks:
                notes.append(f"{split}: labels from {source.folders['semantic']}/")
        else:
            default = "splits/train.txt" if train else "splits/val.txt"
            chosen = data.train_split if train else data.val_split
            ds, n = taskonomy.taskonomy_dataset(
                root, chosen or default, list(data.tasks), tuple(data.image_size),
                training.batch_size, shuffle=train, flip=train and (data.flip or data.augment),
                image_normalization=data.image_normalization,
                target_normalization=data.target_normalization,
                seed=training.seed, check_all_files=data.check_all_files,
            )
        datasets[split], sizes[split] = ds, n
    info = DatasetInfo(root, num_classes, ignore, names,
                       sizes.get("train", 0), sizes.get("val", 0), tuple(notes))
    return datasets, info


def _mtan_split(data, root, split):
    """The folder and indices of a split, with the held-out part when asked."""
    train_folder = data.train_split or "train"
    if data.val_source == "val":
        return (train_folder if split == "train" else data.val_split or "val"), None
    n = len(mtan.MTANSplit(root, train_folder, data.format, []).indices)
    kept, held = mtan.holdout_indices(n, data.holdout_fraction, data.holdout_seed)
    return train_folder, kept if split == "train" else held
