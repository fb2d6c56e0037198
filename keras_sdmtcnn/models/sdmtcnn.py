"""SD-MTCNN: a SegNet backbone, one Teacher decoder and one Student head per task.

One Keras functional graph::

    image -> SegNet backbone --bottleneck--+--> Teacher decoder per task --> {task}_teacher
               (skip features, pool masks)  +
                                            +--> Student head per task   --> {task}_student

:class:`SDMTCNN` composes it in its constructor (keras-hub style) from the
backbone's graph function (``backbone.segnet_encoder``), the Teacher decoders
and the Student heads, and is a
:class:`~keras_sdmtcnn.training.trainer.MultiTaskTrainer`, so it trains with
``compile(optimizer, objective)`` and ``fit``. ``backbone``,
``teacher_model()`` and ``student_model()`` are sub-models that share the
layers (and weights).

Why the backbone is built inline rather than called as a nested
``SegNetBackbone`` model: nesting changes the order in which TensorFlow
sums the gradients of tensors with several consumers (the bottleneck feeds
every head), so training would round differently and no earlier result
would reproduce; inline, the graph (and every trained number) is exactly
that of version 0.1, whose ``.keras`` files therefore load as they are.
"""

import keras

from keras_sdmtcnn import PACKAGE
from keras_sdmtcnn.models.backbone import BOTTLENECK, encoder_outputs, scaled, segnet_encoder
from keras_sdmtcnn.models.decoders import DECODERS, teacher_decoder
from keras_sdmtcnn.models.heads import student_head
from keras_sdmtcnn.tasks import BRANCHES, get_task, output_channels, output_name, validate_tasks
from keras_sdmtcnn.training.trainer import MultiTaskTrainer

FEATURES = "shared_features"


def feature_output(level):
    """Output name of the shared backbone output ``level`` (``bottleneck``: ``shared_features``)."""
    return FEATURES if level == BOTTLENECK else f"shared_{level}"


def feature_levels(feature_outputs):
    """The backbone outputs that ``feature_outputs`` (a bool or a list of names) asks for."""
    if isinstance(feature_outputs, bool):
        return [BOTTLENECK] if feature_outputs else []
    return list(feature_outputs)


def branch_outputs(backbone_outputs, tasks, branches, num_classes, stage_filters,
                   encoder_depths, decoder, attention, head_filters, synchronized_bn):
    """The Teacher decoders and Student heads of ``tasks`` on the backbone's outputs.

    Returns ``{task}_{branch}`` tensors, built task by task, Teacher first.
    """
    outputs = {}
    for task in tasks:
        spec = get_task(task)
        channels = output_channels(task, num_classes)
        if "teacher" in branches:
            outputs[output_name(task, "teacher")] = teacher_decoder(
                backbone_outputs, output_name(task, "teacher"), stage_filters,
                encoder_depths, channels, spec.activation, decoder, attention, synchronized_bn)
        if "student" in branches:
            outputs[output_name(task, "student")] = student_head(
                backbone_outputs, output_name(task, "student"), head_filters, channels,
                spec.activation, synchronized_bn)
    return outputs


@keras.saving.register_keras_serializable(package=PACKAGE)
class SDMTCNN(MultiTaskTrainer):
    """Self-distilled multi-task CNN (SegNet or U-Net decoders, with task attention).

    Args:
        tasks: non-empty list of task names out of ``semantic``, ``depth``,
            ``normal``, ``keypoints``, ``edges``.
        num_classes: segmentation output channels (ignored without
            ``semantic``); must be >= 2.
        ignore_label: segmentation label that does not count in losses and
            metrics (``-1`` for NYUv2 and CityScapes, ``0`` for Taskonomy).
        image_size: ``(height, width)``; each must be divisible by
            ``2 ** len(encoder_filters)`` (16 by default). ``None`` entries
            leave that dimension free.
        input_channels: channels of the input image.
        width_multiplier: scales every filter count (1.0 is the paper).
        encoder_filters, encoder_depths: filters and number of conv layers of
            each encoder block (paper: 64/128/256/512 with 2/2/3/4 layers).
        bottleneck_filters: feature maps of the shared bottleneck (1024).
        decoder: ``"segnet"`` (unpooling at the pooling positions) or
            ``"unet"`` (upsampling and concatenation skips).
        attention: task attention in every Teacher decoder block (``False``
            is the paper's Baseline-4).
        student_filters: filters of the Student's stride-2 transposed
            convolutions, one per encoder block.
        task_channels: optional ``{task: channels}``; must agree with the
            task (it is a check, for recipes that state channels).
        synchronized_bn: synchronise BatchNorm statistics across replicas.
        branches: which branches to build: both (default), or only
            ``["student"]`` (the Student network of traditional two-stage
            distillation) or ``["teacher"]``.
        feature_outputs: also output backbone features for feature
            distillation: ``True`` (the bottleneck, as ``shared_features``)
            or a list of backbone output names (``"bottleneck"`` as
            ``shared_features``, any other ``NAME`` as ``shared_NAME``).

    Example:
        >>> model = SDMTCNN(["semantic", "depth"], num_classes=13,
        ...                 image_size=(64, 64), width_multiplier=0.125)
        >>> model.compile(keras.optimizers.Adam(1e-4), SeparateObjective())
        >>> outputs = model.predict(images)   # {"semantic_teacher": ..., ...}
        >>> student = model.student_model()   # shares weights

    Reference:
        Jha, Kumar, Banerjee, Namboodiri, "SD-MTCNN: Self-Distilled
        Multi-Task CNN", BMVC 2020.
    """

    def __init__(
        self,
        tasks,
        num_classes=13,
        ignore_label=-1,
        image_size=(None, None),
        input_channels=3,
        width_multiplier=1.0,
        encoder_filters=(64, 128, 256, 512),
        encoder_depths=(2, 2, 3, 4),
        bottleneck_filters=1024,
        decoder="segnet",
        attention=True,
        student_filters=(128, 64, 32, 16),
        task_channels=None,
        synchronized_bn=False,
        branches=BRANCHES,
        feature_outputs=False,
        **kwargs,
    ):
        tasks = validate_tasks(tasks)
        branches = tuple(branches)
        if not branches or any(b not in BRANCHES for b in branches):
            raise ValueError(f"branches must be a non-empty subset of {BRANCHES}, got {branches}.")
        encoder_filters = tuple(int(f) for f in encoder_filters)
        encoder_depths = tuple(int(d) for d in encoder_depths)
        student_filters = tuple(int(f) for f in student_filters)
        image_size = tuple(image_size) if image_size is not None else (None, None)
        _check_arguments(
            tasks, num_classes, image_size, input_channels, width_multiplier,
            encoder_filters, encoder_depths, bottleneck_filters, decoder,
            student_filters, task_channels,
        )
        stage_filters = [scaled(f, width_multiplier) for f in encoder_filters]
        head_filters = [scaled(f, width_multiplier) for f in student_filters]

        # === Functional graph ===
        image = keras.Input(shape=(*image_size, input_channels), name="image")
        features = segnet_encoder(image, stage_filters, encoder_depths,
                                  scaled(bottleneck_filters, width_multiplier), synchronized_bn)
        outputs = branch_outputs(features, tasks, branches, num_classes, stage_filters,
                                 encoder_depths, decoder, attention, head_filters,
                                 synchronized_bn)
        for level in feature_levels(feature_outputs):
            outputs[feature_output(level)] = keras.layers.Identity(
                name=feature_output(level))(features[level])
        super().__init__(inputs=image, outputs=outputs, **kwargs)

        # === Config ===
        self.tasks = tasks
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        self.image_size = image_size
        self.input_channels = int(input_channels)
        self.width_multiplier = float(width_multiplier)
        self.encoder_filters = encoder_filters
        self.encoder_depths = encoder_depths
        self.bottleneck_filters = int(bottleneck_filters)
        self.decoder = decoder
        self.attention = bool(attention)
        self.student_filters = student_filters
        self.task_channels = dict(task_channels or {})
        self.synchronized_bn = bool(synchronized_bn)
        self.branches = branches
        self.feature_outputs = (feature_outputs if isinstance(feature_outputs, bool)
                                else list(feature_outputs))

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "tasks": list(self.tasks),
            "num_classes": self.num_classes,
            "ignore_label": self.ignore_label,
            "image_size": list(self.image_size),
            "input_channels": self.input_channels,
            "width_multiplier": self.width_multiplier,
            "encoder_filters": list(self.encoder_filters),
            "encoder_depths": list(self.encoder_depths),
            "bottleneck_filters": self.bottleneck_filters,
            "decoder": self.decoder,
            "attention": self.attention,
            "student_filters": list(self.student_filters),
            "task_channels": self.task_channels,
            "synchronized_bn": self.synchronized_bn,
            "branches": list(self.branches),
            "feature_outputs": self.feature_outputs,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @property
    def backbone(self):
        """The shared encoder as a sub-model with ``SegNetBackbone``'s named outputs.

        Its layers (and weights) are this model's.
        """
        outputs = encoder_outputs(self, len(self.encoder_filters))
        return keras.Model(self.inputs[0], outputs, name=f"{self.name}_backbone")

    def branch_model(self, branch):
        """A functional sub-model of one branch, sharing this model's layers.

        Its outputs are the dict ``{task}_{branch}`` of this model; it is a
        plain ``keras.Model`` (saves, converts and exports like any other).
        """
        self._check_branch(branch)
        outputs = {
            output_name(t, branch): self.get_layer(output_name(t, branch)).output
            for t in self.tasks
        }
        return keras.Model(self.inputs[0], outputs, name=f"{self.name}_{branch}")


def _check_arguments(tasks, num_classes, image_size, input_channels,
                     width_multiplier, encoder_filters, encoder_depths,
                     bottleneck_filters, decoder, student_filters, task_channels):
    stages = len(encoder_filters)
    if stages == 0 or len(encoder_depths) != stages:
        raise ValueError(
            f"encoder_filters {list(encoder_filters)} and encoder_depths "
            f"{list(encoder_depths)} must be non-empty and of the same length."
        )
    if min(encoder_depths) < 1 or min(encoder_filters) < 1 or bottleneck_filters < 1:
        raise ValueError("Every encoder depth and filter count must be >= 1.")
    if len(student_filters) != stages or min(student_filters) < 1:
        raise ValueError(
            f"student_filters needs {stages} positive entries (one stride-2 "
            f"transposed convolution per encoder block), got {list(student_filters)}."
        )
    if width_multiplier <= 0:
        raise ValueError(f"width_multiplier must be > 0, got {width_multiplier}.")
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}.")
    if len(image_size) != 2:
        raise ValueError(f"image_size must be (height, width), got {image_size}.")
    factor = 2**stages
    for axis, size in zip(("height", "width"), image_size):
        if size is not None and (size < factor or size % factor):
            raise ValueError(
                f"Input {axis} {size} is not a positive multiple of {factor} "
                f"(the model pools {stages} times): resize the input, e.g. to "
                f"{max(factor, (size // factor) * factor)}."
            )
    if input_channels < 1:
        raise ValueError(f"input_channels must be >= 1, got {input_channels}.")
    labelled = [t for t in tasks if get_task(t).is_classification]
    if labelled and num_classes < 2:
        raise ValueError(
            f"num_classes must be >= 2 for the {labelled[0]} task, got {num_classes}."
        )
    for task, channels in (task_channels or {}).items():
        spec = get_task(task)
        if task not in tasks:
            raise ValueError(f"task_channels names {task!r}, which is not in tasks {list(tasks)}.")
        expected = num_classes if spec.channels is None else spec.channels
        if channels != expected:
            what = "num_classes" if spec.channels is None else "fixed by the task"
            raise ValueError(
                f"Task {task!r} has {expected} output channels ({what}), "
                f"got {channels}."
            )
