"""The five dense prediction tasks, each declared once.

A :class:`TaskSpec` says everything the rest of the library needs to know
about a task: how many output channels it has, how the network's raw output is
turned into a prediction, which task loss and which distillation loss it uses,
which metrics it reports, which metric is its headline and whether higher or
lower is better.

Target conventions (what the data loaders yield and the losses expect):

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

TASK_NAMES = ("semantic", "depth", "normal", "keypoints", "edges")
BRANCHES = ("teacher", "student")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Declaration of one task.

    Attributes:
        name: task name, also the key of its target and the prefix of its outputs.
        channels: output channels, or ``None`` when set by ``num_classes``.
        activation: ``"logits"`` (softmax taken by losses and metrics),
            ``"linear"`` or ``"l2_normalize"``.
        task_loss: registered name of the task loss in ``keras_sdmtcnn.losses``.
        distillation: registered name of the default distillation term.
        metrics: names of the values its streaming metric reports, each with
            its direction: ``True`` when higher is better.
        main_metric: the headline metric shown in per-epoch lines and used to
            pick the best checkpoint.
    """

    name: str
    channels: int | None
    activation: str
    task_loss: str
    distillation: str
    metrics: tuple
    main_metric: str

    def higher_is_better(self, metric):
        return dict(self.metrics)[metric]


TASKS = {
    "semantic": TaskSpec(
        name="semantic",
        channels=None,
        activation="logits",
        task_loss="cross_entropy",
        distillation="kl",
        metrics=(("miou", True), ("pixel_acc", True)),
        main_metric="miou",
    ),
    "depth": TaskSpec(
        name="depth",
        channels=1,
        activation="linear",
        task_loss="masked_l1",
        distillation="l2",
        metrics=(("abs_err", False), ("rel_err", False)),
        main_metric="abs_err",
    ),
    "normal": TaskSpec(
        name="normal",
        channels=3,
        activation="l2_normalize",
        task_loss="cosine",
        distillation="l2",
        metrics=(
            ("angle_mean", False),
            ("angle_median", False),
            ("within_11_25", True),
            ("within_22_5", True),
            ("within_30", True),
            ("cosine", True),
        ),
        main_metric="angle_mean",
    ),
    "keypoints": TaskSpec(
        name="keypoints",
        channels=1,
        activation="linear",
        task_loss="l1",
        distillation="l2",
        metrics=(("abs_err", False),),
        main_metric="abs_err",
    ),
    "edges": TaskSpec(
        name="edges",
        channels=1,
        activation="linear",
        task_loss="l1",
        distillation="l2",
        metrics=(("abs_err", False),),
        main_metric="abs_err",
    ),
}


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
    """Number of output channels of ``task`` (``num_classes`` for semantic)."""
    spec = get_task(task)
    return num_classes if spec.channels is None else spec.channels


def output_name(task, branch):
    """Name of the model output for ``task`` on ``branch``, e.g. ``depth_student``."""
    return f"{task}_{branch}"
