"""SD-MTCNN: a SegNet backbone, one Teacher decoder and one Student head per task.

One Keras functional graph, built from one ``ModelConfig``::

    image -> SegNet backbone --bottleneck--+--> Teacher decoder per task --> {task}_teacher
               (skip features, pool masks)  +
                                            +--> Student head per task   --> {task}_student

:class:`SDMTCNN` is a plain network: Keras layers and ``keras.ops`` only, so
it builds and runs under any Keras backend (the speed kernels of
``kernels.py`` apply under TensorFlow and fall back to their Keras parents
elsewhere). It knows nothing of training: ``training/trainer.py`` trains it.
``backbone``, ``teacher_model()`` and ``student_model()`` are sub-models
that share its layers (and weights).

Why the backbone is built inline rather than called as a nested
``SegNetBackbone`` model: nesting changes the order in which TensorFlow
sums the gradients of tensors with several consumers (the bottleneck feeds
every head), so training would round differently and no earlier result
would reproduce; inline, the graph (and every trained number) is exactly
that of version 0.1, whose ``.keras`` files therefore load as they are.
"""

import keras

from keras_sdmtcnn import PACKAGE
from keras_sdmtcnn.errors import UserError
from keras_sdmtcnn.models.backbone import BOTTLENECK, encoder_outputs, segnet_encoder
from keras_sdmtcnn.models.config import FIELDS, model_config, model_config_dict
from keras_sdmtcnn.models.decoders import teacher_decoder
from keras_sdmtcnn.models.heads import student_head
from keras_sdmtcnn.tasks import BRANCHES, get_task, output_channels, output_name, validate_tasks

FEATURES = "shared_features"


def feature_output(level):
    """Output name of the shared backbone output ``level`` (``bottleneck``: ``shared_features``)."""
    return FEATURES if level == BOTTLENECK else f"shared_{level}"


def feature_levels(feature_outputs):
    """The backbone outputs that ``feature_outputs`` (a bool or a list of names) asks for."""
    if isinstance(feature_outputs, bool):
        return [BOTTLENECK] if feature_outputs else []
    return list(feature_outputs)


def branch_outputs(backbone_outputs, tasks, branches, num_classes, config):
    """The Teacher decoders and Student heads of ``tasks`` on the backbone's outputs.

    Returns ``{task}_{branch}`` tensors, built task by task, Teacher first.
    """
    outputs = {}
    for task in tasks:
        spec = get_task(task)
        channels = output_channels(task, num_classes)
        if "teacher" in branches:
            outputs[output_name(task, "teacher")] = teacher_decoder(
                backbone_outputs, output_name(task, "teacher"), config, channels,
                spec.activation)
        if "student" in branches:
            outputs[output_name(task, "student")] = student_head(
                backbone_outputs, output_name(task, "student"), config, channels,
                spec.activation)
    return outputs


def network_config(config):
    """A network config in today's form.

    0.1 and 0.2 listed the architecture's fields flat beside the tasks, and
    ``task_channels`` (a check of the outputs' channels, which the tasks fix).
    """
    config = dict(config)
    config.pop("task_channels", None)
    model = dict(config.pop("model", None) or {})
    model.update({k: config.pop(k) for k in list(config) if k in FIELDS})
    return {**config, "model": model}


# Registered under a name of its own: 0.1 and 0.2 saved their trainer as
# "SDMTCNN", which now loads as a trainer of this network (training/legacy.py).
@keras.saving.register_keras_serializable(package=PACKAGE, name="SDMTCNNNetwork")
class SDMTCNN(keras.Model):
    """Self-distilled multi-task CNN (SegNet or U-Net decoders, with task attention).

    Args:
        tasks: non-empty list of task names out of ``semantic``, ``depth``,
            ``normal``, ``keypoints``, ``edges``.
        num_classes: segmentation output channels (ignored without
            ``semantic``); must be >= 2.
        ignore_label: segmentation label that does not count in losses and
            metrics (``-1`` for NYUv2 and CityScapes, ``0`` for Taskonomy);
            kept with the network for the trainer.
        image_size: ``(height, width)``; each a multiple of ``2 ** stages``
            (16 by default). ``None`` entries leave that dimension free.
        input_channels: channels of the input image.
        model: the architecture, a ``ModelConfig`` (the recipe's ``model``
            section) or its dict; the defaults are the paper's.
        branches: which branches to build: both (default), or only
            ``["student"]`` (the Student network of traditional two-stage
            distillation) or ``["teacher"]``.
        feature_outputs: also output backbone features for feature
            distillation: ``True`` (the bottleneck, as ``shared_features``)
            or a list of backbone output names (``"bottleneck"`` as
            ``shared_features``, any other ``NAME`` as ``shared_NAME``).
        **kwargs: any ``ModelConfig`` field (``width_multiplier=0.25``), then
            ``keras.Model``'s (``name``).

    Example:
        >>> network = SDMTCNN(["semantic", "depth"], num_classes=13,
        ...                   image_size=(64, 64), width_multiplier=0.125)
        >>> outputs = network(images)          # {"semantic_teacher": ..., ...}
        >>> student = network.student_model()  # shares weights

    Reference:
        Jha, Kumar, Banerjee, Namboodiri, "SD-MTCNN: Self-Distilled
        Multi-Task CNN", BMVC 2020.
    """

    def __init__(self, tasks, num_classes=13, ignore_label=-1, image_size=(None, None),
                 input_channels=3, model=None, branches=BRANCHES, feature_outputs=False,
                 **kwargs):
        config, kwargs = model_config(model, kwargs)
        tasks = validate_tasks(tasks)
        branches = tuple(branches)
        if not branches or any(b not in BRANCHES for b in branches):
            raise UserError(f"branches must be a non-empty subset of {BRANCHES}, got "
                            f"{branches}.")
        image_size = tuple(image_size) if image_size is not None else (None, None)
        config.check_image_size(image_size)
        labelled = [t for t in tasks if get_task(t).is_classification]
        if labelled and num_classes < 2:
            raise UserError(f"num_classes must be >= 2 for the {labelled[0]} task, got "
                            f"{num_classes}.")
        if input_channels < 1:
            raise UserError(f"input_channels must be >= 1, got {input_channels}.")

        # === Functional graph ===
        image = keras.Input(shape=(*image_size, input_channels), name="image")
        features = segnet_encoder(image, config)
        outputs = branch_outputs(features, tasks, branches, num_classes, config)
        for level in feature_levels(feature_outputs):
            outputs[feature_output(level)] = keras.layers.Identity(
                name=feature_output(level))(features[level])
        super().__init__(inputs=image, outputs=outputs, **kwargs)

        # === Config ===
        self.config = config
        self.tasks, self.branches = tasks, branches
        self.num_classes, self.ignore_label = int(num_classes), int(ignore_label)
        self.image_size, self.input_channels = image_size, int(input_channels)
        self.feature_outputs = (feature_outputs if isinstance(feature_outputs, bool)
                                else list(feature_outputs))

    def compile(self, *args, **kwargs):
        if "objective" in kwargs or any(type(a).__name__.endswith("Objective") for a in args):
            raise UserError(
                "SDMTCNN is the network; since 0.3 a trainer trains it: "
                "MultiTaskTrainer.for_network(network).compile(optimizer, objective).")
        return super().compile(*args, **kwargs)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable, "tasks": list(self.tasks),
                "num_classes": self.num_classes, "ignore_label": self.ignore_label,
                "image_size": list(self.image_size), "input_channels": self.input_channels,
                "model": model_config_dict(self.config), "branches": list(self.branches),
                "feature_outputs": self.feature_outputs}

    @classmethod
    def from_config(cls, config):
        return cls(**network_config(config))

    @property
    def backbone(self):
        """The shared encoder as a sub-model with ``SegNetBackbone``'s named outputs.

        Its layers (and weights) are this model's.
        """
        outputs = encoder_outputs(self, self.config.stages)
        return keras.Model(self.inputs[0], outputs, name=f"{self.name}_backbone")

    def branch_model(self, branch):
        """A functional sub-model of one branch, sharing this model's layers.

        Its outputs are the dict ``{task}_{branch}`` of this model; it is a
        plain ``keras.Model`` (saves, converts and exports like any other).
        """
        if branch not in self.branches:
            raise UserError(f"branch must be one of {self.branches}, got {branch!r}.")
        outputs = {output_name(t, branch): self.get_layer(output_name(t, branch)).output
                   for t in self.tasks}
        return keras.Model(self.inputs[0], outputs, name=f"{self.name}_{branch}")

    def teacher_model(self):
        """The Teacher: encoder and attention decoders (shares weights)."""
        return self.branch_model("teacher")

    def student_model(self):
        """The Student: encoder and deconvolution heads (shares weights)."""
        return self.branch_model("student")
