"""From a recipe's ``data`` section to training and validation ``tf.data`` pipelines.

Each reader module yields samples of ``(image, {task: target})``; this
module picks the format's reader (``formats.py``), fills the format's
defaults (classes, ignore label) and returns the splits with a
:class:`DatasetInfo`.
"""

import dataclasses

from keras_sdmtcnn.data import mtan, pipeline, scenes, taskonomy
from keras_sdmtcnn.data.formats import format_defaults, get_format
from keras_sdmtcnn.tasks import get_task


@dataclasses.dataclass
class DatasetInfo:
    root: str
    num_classes: int
    ignore_label: int
    class_names: tuple | None
    num_train: int
    num_val: int
    notes: tuple = ()
    steps_per_epoch: int = 0


def dataset_root(data, verbose=True):
    """The dataset root; for ``scenes``, generates the cached dataset if needed."""
    if not get_format(data.format).needs_root:  # the built-in scenes
        s = data.scenes
        return scenes.ensure_scenes(
            s.cache_dir, s.num_train, s.num_val, s.height, s.width, s.seed,
            verbose=verbose,
        )
    return data.root


def build_datasets(recipe, verbose=True, splits=("train", "val"), initial_epoch=0,
                   one_pass=False):
    """Returns ``({split: dataset}, DatasetInfo)`` for the recipe's data.

    ``train`` covers epochs ``initial_epoch .. training.epochs - 1``, each
    ``info.steps_per_epoch`` batches, shuffled and augmented per epoch from
    ``training.seed`` (see ``pipeline.py``): resuming at an epoch replays it
    exactly. ``val`` is one ordered pass. With ``data.val_source: holdout``,
    ``val`` is a seeded held-out part of the training split and ``train`` is
    the rest. ``one_pass=True`` makes ``train`` one ordered pass without
    augmentation too (for statistics over the training data).
    """
    data, training = recipe.data, recipe.training
    root = dataset_root(data, verbose=verbose)
    num_classes, ignore, names = format_defaults(data)
    datasets, sizes, notes = {}, {}, []
    for split in splits:
        train = split == "train"
        if get_format(data.format).reader == "mtan":
            folder, indices = _mtan_split(data, root, split)
            paths, decode, n, source = mtan.mtan_source(
                root, folder, data.format, list(data.tasks), tuple(data.image_size),
                indices, data.label_dir, data.image_normalization, num_classes, ignore,
            )
            notes += [f"{split}: labels from {source.folders[task]}/" for task in data.tasks
                      if get_task(task).is_classification]
            scale, flip = data.augment, data.augment or data.flip
            depth_zoom = source.depth_zoom
        else:
            default = "splits/train.txt" if train else "splits/val.txt"
            chosen = data.train_split if train else data.val_split
            paths, decode, n = taskonomy.taskonomy_source(
                root, chosen or default, list(data.tasks), tuple(data.image_size),
                data.image_normalization, data.target_normalization, data.check_all_files,
                num_classes, ignore,
            )
            scale, flip, depth_zoom = False, data.flip or data.augment, "divide"
        if train and not one_pass:
            datasets[split] = pipeline.train_pipeline(
                paths, decode, n, training.batch_size, training.seed,
                epochs=training.epochs, initial_epoch=initial_epoch,
                steps_per_epoch=training.steps_per_epoch, scale=scale, flip=flip,
                cache=data.cache, depth_zoom=depth_zoom,
                in_memory=recipe.speed.decoded_in_memory,
            )
        else:
            batch = (training.batch_size if train
                     else recipe.evaluation.batch_size or training.batch_size)
            datasets[split] = pipeline.eval_pipeline(paths, decode, batch,
                                                     in_memory=recipe.speed.decoded_in_memory)
        sizes[split] = n
    info = DatasetInfo(
        root, num_classes, ignore, names, sizes.get("train", 0), sizes.get("val", 0),
        tuple(notes),
        pipeline.steps_per_epoch(sizes.get("train", 0), training.batch_size,
                                 training.steps_per_epoch),
    )
    return datasets, info


def _mtan_split(data, root, split):
    """The folder and indices of a split, with the held-out part when asked."""
    train_folder = data.train_split or "train"
    if data.val_source == "val":
        return (train_folder if split == "train" else data.val_split or "val"), None
    n = len(mtan.MTANSplit(root, train_folder, data.format, []).indices)
    kept, held = mtan.holdout_indices(n, data.holdout_fraction, data.holdout_seed)
    return train_folder, kept if split == "train" else held


def pipeline_throughput(recipe, batches=50):
    """Samples per second of the recipe's training pipeline alone, after 5 warm-up batches."""
    import time

    datasets, _ = build_datasets(recipe, verbose=False, splits=("train",))
    ds = datasets["train"].repeat()
    iterator = iter(ds)
    for _ in range(min(5, batches)):
        next(iterator)
    start, samples = time.perf_counter(), 0
    for _ in range(batches):
        x, _ = next(iterator)
        samples += int(x.shape[0])
    return samples / (time.perf_counter() - start)
