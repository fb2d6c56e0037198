"""``python -m keras_sdmtcnn.baselines RECIPE``: what trivial predictors score.

Constant predictions fitted on the training split (the majority class, the
mean depth, the mean normal renormalised, the mean keypoint and edge values),
scored on the validation split with the same streaming metrics as the models,
so a model's numbers can be read against "knows nothing about the image".
"""

import argparse

import numpy as np

from keras_sdmtcnn import cli


def trivial_baselines(recipe):
    """Returns ``{task}_trivial_{metric}`` values on the recipe's validation split."""
    import tensorflow as tf

    from keras_sdmtcnn.data import build_datasets
    from keras_sdmtcnn.metrics import make_task_metric

    datasets, info = build_datasets(recipe, verbose=False, one_pass=True)
    tasks = list(recipe.data.tasks)
    sums = {t: 0.0 for t in tasks}
    counts = {t: 0.0 for t in tasks}
    class_counts = np.zeros(info.num_classes)
    for _, y in datasets["train"]:
        for task in tasks:
            target = y[task].numpy()
            if task == "semantic":
                valid = (target != info.ignore_label) & (target >= 0) & (target < info.num_classes)
                class_counts += np.bincount(target[valid], minlength=info.num_classes)
            elif task == "depth":
                sums[task] += target[target > 0].sum()
                counts[task] += (target > 0).sum()
            elif task == "normal":
                valid = np.any(target != 0, axis=-1)
                sums[task] = sums[task] + target[valid].sum(0)
            else:
                sums[task] += target.sum()
                counts[task] += target.size
    constant = {}
    for task in tasks:
        if task == "semantic":
            constant[task] = np.eye(info.num_classes)[class_counts.argmax()]
        elif task == "normal":
            constant[task] = sums[task] / np.linalg.norm(sums[task])
        else:
            constant[task] = np.array([sums[task] / max(counts[task], 1)])
    metrics = {t: make_task_metric(t, f"{t}_trivial", info.num_classes, info.ignore_label)
               for t in tasks}
    for _, y in datasets["val"]:
        for task in tasks:
            shape = tf.shape(y[task])[:3]
            pred = tf.broadcast_to(tf.constant(constant[task], tf.float32),
                                   tf.concat([shape, [len(constant[task])]], 0))
            metrics[task].update_state(y[task], pred)
    out = {}
    for metric in metrics.values():
        out.update({k: float(v) for k, v in metric.result().items()})
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m keras_sdmtcnn.baselines",
        description="Scores of constant predictors on a recipe's validation split.",
    )
    parser.add_argument("recipe")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    from keras_sdmtcnn.recipes import load_recipe

    for key, value in trivial_baselines(load_recipe(args.recipe, args.set)).items():
        print(f"{key:<32} {value:.4f}")


if __name__ == "__main__":
    cli.run(main)
