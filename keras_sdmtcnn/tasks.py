"""The task table: everything about each dense prediction task, in one place.

A :class:`TaskSpec` says everything the rest of the library needs to know
about a task: its output channels and activation, its task loss and
distillation term, its metric and the names and directions of the values
that metric reports, which of them is the headline, what the exported model
outputs for it, how a picture shows it, how its target is resized and
flipped, and what a constant predictor of it is. Losses, metrics, the
serving graph, the pictures and the data pipeline read these fields; none
of them branches on a task's name. A new task is one entry here plus, where
it needs one, a loss or metric class registered under the name it gives.

This module imports no TensorFlow (the recipe schema uses it).

Target conventions (what the data readers yield and the losses expect):

- ``semantic``: int32 ``(H, W)`` class ids; ``ignore_label`` pixels do not
  count. The network outputs ``num_classes`` logits.
- ``depth``: float32 ``(H, W, 1)``, positive depth; ``0`` marks an invalid
  pixel.
- ``normal``: float32 ``(H, W, 3)`` unit vectors in the camera frame; an
  all-zero vector marks an invalid pixel. Predictions are L2-normalised.
- ``keypoints`` / ``edges``: float32 ``(H, W, 1)`` responses, every pixel
  valid.
"""

import dataclasses

BRANCHES = ("teacher", "student")


@dataclasses.dataclass(frozen=True)
class Metric:
    """One value a task's metric reports.

    Attributes:
        key: the name in logs, after ``{task}_{branch}_``.
        higher_is_better: its direction.
        label: the short column header of tables (``mIoU``, ``Mean°``).
        in_delta_m: whether it counts in Delta_m. The field's tables
            (LibMTL, MTAN and the papers built on them, CAGrad, Nash-MTL)
            count a task's standard metrics; a value we log besides them
            (the normal's cosine similarity) does not count.
    """

    key: str
    higher_is_better: bool
    label: str
    in_delta_m: bool = True


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Declaration of one task.

    Attributes:
        name: task name, also the key of its target and the prefix of its outputs.
        channels: output channels, or ``None`` when set by ``num_classes``.
        activation: ``"logits"`` (a class-label task: softmax taken by losses
            and metrics), ``"linear"`` or ``"l2_normalize"``.
        task_loss: registered name of the task loss (``training/losses.py``).
        distillation: registered name of the paper's distillation term.
        metric: registered name of the streaming metric (``training/metrics.py``).
        metrics: the values that metric reports, in table order.
        main_metric: the headline metric shown in per-epoch lines and curves.
        picture: how a picture shows a prediction: ``"classes"`` (a colour
            per class), ``"vectors"`` (xyz as RGB) or ``"map:CMAP"`` (a
            matplotlib colour map over the value's 1-99 percentiles).
        resize: interpolation when a target is resized: ``"nearest"`` keeps
            labels and invalid pixels, ``"bilinear"`` smooths responses.
        flip_sign: per channel, the sign a left-right flip gives the value
            (the normal's x component changes sign).
        scales_with_zoom: the value is divided by the zoom factor of a
            scale-crop augmentation (depth: a closer look is nearer).
        constant: the trivial predictor fitted on training targets:
            ``"majority"`` (most frequent class), ``"mean_valid"`` (mean over
            positive values), ``"mean_direction"`` (mean of valid unit
            vectors, renormalised) or ``"mean"``.
        meaning: what the value means, for export metadata.
    """

    name: str
    channels: int | None
    activation: str
    task_loss: str
    distillation: str
    metric: str
    metrics: tuple
    main_metric: str
    picture: str
    resize: str
    flip_sign: tuple | None
    scales_with_zoom: bool
    constant: str
    meaning: str

    @property
    def is_classification(self):
        """Class-label targets ``(H, W)`` and logits out (the others are maps ``(H, W, C)``)."""
        return self.activation == "logits"

    def higher_is_better(self, metric):
        return self.metric_by_key(metric).higher_is_better

    def metric_by_key(self, key):
        for metric in self.metrics:
            if metric.key == key:
                return metric
        raise KeyError(f"Task {self.name!r} has no metric {key!r}.")

    @property
    def metric_keys(self):
        return tuple(m.key for m in self.metrics)

    @property
    def delta_m_metrics(self):
        """The metrics that count in Delta_m (``Metric.in_delta_m``)."""
        return tuple(m for m in self.metrics if m.in_delta_m)

    @property
    def logits_output(self):
        """Exported output of a class-label task's scores (``semantic_logits``)."""
        return f"{self.name}_logits"

    @property
    def classes_output(self):
        """Exported output of a class-label task's argmax (``semantic_classes``)."""
        return f"{self.name}_classes"

    @property
    def value_output(self):
        """The exported output that metrics score: the logits, or the prediction."""
        return self.logits_output if self.is_classification else self.name

    def serving_outputs(self):
        """``{output name: meaning}`` of this task in an exported model.

        A class-label task gives its logits and the argmax class per pixel;
        any other task its prediction under its own name.
        """
        if self.is_classification:
            return {self.logits_output: "per-class scores (softmax for probabilities)",
                    self.classes_output: "class id per pixel (argmax of the logits)"}
        return {self.name: self.meaning}


_ABS = Metric("abs_err", False, "Abs")

TASKS = {
    "semantic": TaskSpec(
        name="semantic", channels=None, activation="logits",
        task_loss="cross_entropy", distillation="kl", metric="segmentation",
        metrics=(Metric("miou", True, "mIoU"), Metric("pixel_acc", True, "PixAcc")),
        main_metric="miou", picture="classes", resize="nearest", flip_sign=None,
        scales_with_zoom=False, constant="majority", meaning="class id per pixel",
    ),
    "depth": TaskSpec(
        name="depth", channels=1, activation="linear",
        task_loss="masked_l1", distillation="l2", metric="depth",
        metrics=(_ABS, Metric("rel_err", False, "Rel")),
        main_metric="abs_err", picture="map:magma_r", resize="nearest", flip_sign=None,
        scales_with_zoom=True, constant="mean_valid",
        meaning="depth per pixel, in the training data's units",
    ),
    "normal": TaskSpec(
        name="normal", channels=3, activation="l2_normalize",
        task_loss="cosine", distillation="l2", metric="normal",
        metrics=(
            Metric("angle_mean", False, "Mean°"),
            Metric("angle_median", False, "Median°"),
            Metric("within_11_25", True, "<11.25°"),
            Metric("within_22_5", True, "<22.5°"),
            Metric("within_30", True, "<30°"),
            Metric("cosine", True, "CS", in_delta_m=False),
        ),
        main_metric="angle_mean", picture="vectors", resize="bilinear",
        flip_sign=(-1.0, 1.0, 1.0), scales_with_zoom=False, constant="mean_direction",
        meaning="unit surface normal per pixel (x right, y up, z towards the camera)",
    ),
    "keypoints": TaskSpec(
        name="keypoints", channels=1, activation="linear",
        task_loss="l1", distillation="l2", metric="abs_error", metrics=(_ABS,),
        main_metric="abs_err", picture="map:gray", resize="bilinear", flip_sign=None,
        scales_with_zoom=False, constant="mean", meaning="2D keypoint response per pixel",
    ),
    "edges": TaskSpec(
        name="edges", channels=1, activation="linear",
        task_loss="l1", distillation="l2", metric="abs_error", metrics=(_ABS,),
        main_metric="abs_err", picture="map:gray", resize="bilinear", flip_sign=None,
        scales_with_zoom=False, constant="mean", meaning="texture edge response per pixel",
    ),
}
TASK_NAMES = tuple(TASKS)


def get_task(name):
    """Returns the :class:`TaskSpec` called ``name`` or raises a ``ValueError``."""
    if name not in TASKS:
        raise ValueError(
            f"Unknown task {name!r}. Allowed tasks: {', '.join(TASK_NAMES)}."
        )
    return TASKS[name]


def validate_tasks(tasks):
    """Checks a task list: non-empty, known names, no repeats. Returns a tuple."""
    if isinstance(tasks, str):
        tasks = [tasks]
    tasks = tuple(tasks or ())
    if not tasks:
        raise ValueError(
            f"At least one task is required. Allowed tasks: {', '.join(TASK_NAMES)}."
        )
    for name in tasks:
        get_task(name)
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"Tasks must not repeat, got {list(tasks)}.")
    return tasks


def output_channels(task, num_classes):
    """Number of output channels of ``task`` (``num_classes`` for class-label tasks)."""
    spec = get_task(task)
    return num_classes if spec.channels is None else spec.channels


def output_name(task, branch):
    """Name of the model output for ``task`` on ``branch``, e.g. ``depth_student``."""
    return f"{task}_{branch}"


def log_key(task, branch, metric, split=None):
    """The key of a metric in logs: ``{task}_{branch}_{metric}``, ``val_`` first for validation."""
    key = f"{task}_{branch}_{metric}"
    return f"{split}_{key}" if split and split != "train" else key


def monitor_higher_is_better(key):
    """Direction of a logged value: a task metric's (``val_semantic_teacher_miou``: up), else down.

    Loss terms and anything that is not ``[val_]{task}_{branch}_{metric}``
    are minimised.
    """
    name = key[4:] if key.startswith("val_") else key
    for task, spec in TASKS.items():
        for branch in BRANCHES:
            prefix = f"{task}_{branch}_"
            if name.startswith(prefix) and name[len(prefix):] in spec.metric_keys:
                return spec.higher_is_better(name[len(prefix):])
    return False


def serving_output_names(tasks):
    """Every output name of an exported model of ``tasks``, in order."""
    return [name for task in tasks for name in get_task(task).serving_outputs()]


def column_header(task, metric):
    """``"semantic mIoU ↑"``: the table header of one metric."""
    m = get_task(task).metric_by_key(metric)
    return f"{task} {m.label} {ARROW[m.higher_is_better]}"


ARROW = {True: "↑", False: "↓"}
