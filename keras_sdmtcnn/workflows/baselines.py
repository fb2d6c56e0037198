"""What trivial predictors score: what ``python -m keras_sdmtcnn.baselines`` calls.

Constant predictions fitted on the training split (the majority class, the
mean depth, the mean normal renormalised, the mean keypoint and edge values),
scored on the validation split with the same streaming metrics as the models,
so a model's numbers can be read against "knows nothing about the image".
"""

import numpy as np

from keras_sdmtcnn.tasks import get_task


class _ConstantFit:
    """Accumulates what a task's constant predictor (``TaskSpec.constant``) needs."""

    def __init__(self, kind, num_classes, ignore_label):
        self.kind, self.num_classes, self.ignore_label = kind, num_classes, ignore_label
        self.total, self.count = 0.0, 0.0
        self.class_counts = np.zeros(num_classes)

    def update(self, target):
        if self.kind == "majority":
            valid = ((target != self.ignore_label) & (target >= 0)
                     & (target < self.num_classes))
            self.class_counts += np.bincount(target[valid], minlength=self.num_classes)
        elif self.kind == "mean_valid":
            self.total += target[target > 0].sum()
            self.count += (target > 0).sum()
        elif self.kind == "mean_direction":
            self.total = self.total + target[np.any(target != 0, axis=-1)].sum(0)
        elif self.kind == "mean":
            self.total += target.sum()
            self.count += target.size
        else:
            raise ValueError(f"Unknown constant predictor {self.kind!r}.")

    def value(self):
        """The constant prediction of one pixel (a vector over the output channels)."""
        if self.kind == "majority":
            return np.eye(self.num_classes)[self.class_counts.argmax()]
        if self.kind == "mean_direction":
            return self.total / np.linalg.norm(self.total)
        return np.array([self.total / max(self.count, 1)])


def trivial_baselines(recipe):
    """Returns ``{task}_trivial_{metric}`` values on the recipe's validation split."""
    import tensorflow as tf

    from keras_sdmtcnn.data.datasets import build_datasets
    from keras_sdmtcnn.training.metrics import make_task_metric

    datasets, info = build_datasets(recipe, verbose=False, one_pass=True)
    tasks = list(recipe.data.tasks)
    fits = {t: _ConstantFit(get_task(t).constant, info.num_classes, info.ignore_label)
            for t in tasks}
    for _, y in datasets["train"]:
        for task in tasks:
            fits[task].update(y[task].numpy())
    constant = {task: fits[task].value() for task in tasks}
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
