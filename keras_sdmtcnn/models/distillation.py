"""Models that distil from networks trained beforehand: Baseline-3/KDAM and Li & Bilen.

Both are composed from the same parts as ``SDMTCNN`` (a ``SegNetBackbone``,
Teacher decoders, Student heads) and keep its outputs (``{task}_teacher``,
``{task}_student``), objectives, metrics and sub-models, so training,
evaluation and export do not change.

- :class:`FrozenTeacherStudent`, the paper's Baseline-3 ("traditional
  knowledge distillation"): the Teacher (backbone and attention decoders) is
  trained first, then frozen, and a Student network (its own backbone and
  deconvolution heads) is trained from scratch with its task losses plus the
  distillation terms. The same model serves KDAM's setting, a strong trained
  multi-task teacher distilling into a student with the Cauchy-Schwarz terms
  (``objective.distillation: cauchy_schwarz``). The Teacher is not trainable
  (no gradient, and BatchNorm uses its moving statistics).
- :class:`FeatureDistillationModel`, Li & Bilen (ECCV-W 2020): each task
  ``t`` has a single-task network trained beforehand; its backbone is
  frozen and, at train time, the multi-task network's bottleneck ``phi(x)``
  is mapped by a task-specific **adaptor** ``A_t`` (a 1x1 convolution
  without bias, as the authors') and pulled towards the teacher's
  bottleneck (their Eq. 3-5)::

      loss = task losses (the objective's) + sum_t lambda_t * d(A_t(phi(x)), phi_t(x))
      d(a, b) = || a / sqrt(||a||^2 + eps) - b / sqrt(||b||^2 + eps) ||^2
                                                (Eq. 4; losses.FeatureDistance)

  With ``levels=["middle", "last"]`` (their Table 4) the middle encoder
  stage's features are distilled too, through a second adaptor per task,
  and both terms add up. The adaptors train with the network, at their own
  learning rate when the optimizer gives their layers one
  (``adaptor_layer_names``; the paper: 0.1), and are discarded at export.

Trained weights are copied in by layer name (:func:`copy_weights`), looking
inside nested models, so a single-task ``SDMTCNN`` (encoder inline) fills a
``SegNetBackbone``.
"""

import keras
from keras import layers

from keras_sdmtcnn import PACKAGE
from keras_sdmtcnn.models.backbone import BOTTLENECK, SegNetBackbone, features_name
from keras_sdmtcnn.models.sdmtcnn import SDMTCNN, feature_output
from keras_sdmtcnn.tasks import output_name
from keras_sdmtcnn.training.losses import FeatureDistance
from keras_sdmtcnn.training.trainer import MultiTaskTrainer

TEACHER_NETWORK = "frozen_teacher"
STUDENT_NETWORK = "student_network"
TEACHER = f"{TEACHER_NETWORK}_teacher"  # the sub-model layers, named by branch_model
STUDENT = f"{STUDENT_NETWORK}_student"
NETWORK = "multi_task_network"


LEVELS = ("middle", "last")


def _suffix(level):
    return "" if level == "last" else f"_{level}"


def adapted_name(task, level="last"):
    return f"{task}{_suffix(level)}_adapted_features"


def target_name(task, level="last"):
    return f"{task}{_suffix(level)}_teacher_features"


def adaptor_name(task, level="last"):
    return f"{task}{_suffix(level)}_adaptor"


def feature_loss_name(task, level="last"):
    return f"{task}{_suffix(level)}_feature_loss"


def backbone_level(level, stages):
    """The backbone output of a distillation level: the bottleneck, or the middle stage.

    The middle is encoder stage ``stages // 2 + 1`` (stage 3 of SegNet's 4)
    before its pooling: the shared encoder's middle layer, counting the
    bottleneck as the last.
    """
    if level == "last":
        return BOTTLENECK
    if level == "middle":
        return features_name(stages // 2 + 1)
    raise ValueError(f"level must be one of {LEVELS}, got {level!r}.")


def teacher_encoder_name(task):
    return f"{task}_single_task_encoder"


@keras.saving.register_keras_serializable(package=PACKAGE)
class FrozenTeacherStudent(MultiTaskTrainer):
    """A frozen Teacher and a separate Student network, trained with one objective.

    Args:
        teacher_config: ``SDMTCNN`` config of the trained model whose Teacher
            branch is used (its weights are copied in with
            :meth:`load_teacher`, or restored from a checkpoint).
        student_config: ``SDMTCNN`` config of the Student network (only its
            backbone and Student heads are built).
    """

    def __init__(self, teacher_config, student_config, **kwargs):
        teacher_config = dict(teacher_config)
        student_config = dict(student_config)
        if teacher_config["tasks"] != student_config["tasks"]:
            raise ValueError(
                f"Teacher tasks {teacher_config['tasks']} differ from the Student's "
                f"{student_config['tasks']}.")
        teacher_net = SDMTCNN(
            **{**teacher_config, "branches": ["teacher"], "name": TEACHER_NETWORK})
        teacher = teacher_net.teacher_model()
        teacher.trainable = False
        student_net = SDMTCNN(
            **{**student_config, "branches": ["student"], "name": STUDENT_NETWORK})
        student = student_net.student_model()

        image = keras.Input(shape=teacher_net.inputs[0].shape[1:], name="image")
        t_out, s_out = teacher(image), student(image)
        tasks = list(teacher_config["tasks"])
        outputs = {}
        for task in tasks:
            for branch, out in (("teacher", t_out), ("student", s_out)):
                name = output_name(task, branch)
                outputs[name] = layers.Identity(name=name)(out[name])
        super().__init__(inputs=image, outputs=outputs, **kwargs)
        self.teacher_config, self.student_config = teacher_config, student_config
        self.tasks = tasks
        self.num_classes = teacher_net.num_classes
        self.ignore_label = teacher_net.ignore_label
        self.image_size = teacher_net.image_size
        self.branches = ("teacher", "student")

    def load_teacher(self, trained):
        """Copies the Teacher weights of a trained ``SDMTCNN`` (or a model holding one)."""
        copy_weights(trained.teacher_model(), self.teacher_model())

    def branch_model(self, branch):
        """The frozen Teacher, or the Student network (its own backbone and heads)."""
        self._check_branch(branch)
        return self.get_layer(TEACHER if branch == "teacher" else STUDENT)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "teacher_config": self.teacher_config, "student_config": self.student_config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


@keras.saving.register_keras_serializable(package=PACKAGE)
class FeatureDistillationModel(MultiTaskTrainer):
    """An SD-MTCNN trained with feature distillation from single-task backbones.

    Args:
        model_config: ``SDMTCNN`` config of the multi-task network.
        teacher_configs: ``{task: SDMTCNN config}`` of the single-task
            teachers (their backbone weights are copied in with
            :meth:`load_teachers`, or restored from a checkpoint).
        feature_weights: ``{task: lambda_t}`` (default 1 for each).
        levels: where features are distilled: ``["last"]`` (the bottleneck,
            the default) or ``["middle", "last"]`` (see :func:`backbone_level`).
        adaptor_bias: give the adaptors a bias (the authors' have none;
            models saved before 0.3 had one and load with it).
    """

    def __init__(self, model_config, teacher_configs, feature_weights=None, levels=("last",),
                 adaptor_bias=False, **kwargs):
        model_config = dict(model_config)
        teacher_configs = {t: dict(c) for t, c in teacher_configs.items()}
        levels = list(levels)
        if not levels or any(level not in LEVELS for level in levels):
            raise ValueError(f"levels must be a non-empty list of {LEVELS}, got {levels}.")
        stages = len(model_config.get("encoder_filters", (64, 128, 256, 512)))
        backbone_names = [backbone_level(level, stages) for level in levels]
        net = SDMTCNN(**{**model_config, "feature_outputs": backbone_names, "name": NETWORK})
        names = [output_name(t, b) for t in net.tasks for b in net.branches]
        image = keras.Input(shape=net.inputs[0].shape[1:], name="image")
        out = net(image)
        outputs = {n: layers.Identity(name=n)(out[n]) for n in names}
        for task, config in teacher_configs.items():
            if task not in net.tasks:
                raise ValueError(f"Feature teacher for {task!r}, which is not in {net.tasks}.")
            encoder = SegNetBackbone.from_model_config(config, name=teacher_encoder_name(task))
            encoder.trainable = False
            teacher_features = encoder(image)
            for level, backbone_name in zip(levels, backbone_names):
                target = teacher_features[backbone_name]
                adapted = layers.Conv2D(target.shape[-1], 1, use_bias=adaptor_bias,
                                        name=adaptor_name(task, level))(
                    out[feature_output(backbone_name)])
                for name, tensor in ((adapted_name(task, level), adapted),
                                     (target_name(task, level), target)):
                    outputs[name] = layers.Identity(name=name)(tensor)
        super().__init__(inputs=image, outputs=outputs, **kwargs)
        self.model_config, self.teacher_configs = model_config, teacher_configs
        self.feature_weights = {t: float((feature_weights or {}).get(t, 1.0))
                                for t in teacher_configs}
        self.levels = levels
        self.adaptor_bias = bool(adaptor_bias)
        self.tasks = net.tasks
        self.num_classes, self.ignore_label = net.num_classes, net.ignore_label
        self.image_size = net.image_size
        self.branches = net.branches
        self._feature_tasks = list(teacher_configs)

    def adaptor_layer_names(self):
        """Names of the adaptor layers (which may train at their own learning rate)."""
        return [adaptor_name(t, level) for t in self._feature_tasks for level in self.levels]

    def extra_term_names(self):
        return [feature_loss_name(t, level) for t in self._feature_tasks for level in self.levels]

    def extra_terms(self, y, y_pred):
        distance = FeatureDistance()
        return {
            feature_loss_name(t, level): self.feature_weights[t]
            * distance(y_pred[target_name(t, level)], y_pred[adapted_name(t, level)])
            for t in self._feature_tasks
            for level in self.levels
        }

    def load_teachers(self, trained):
        """Copies the backbone weights of trained single-task models ``{task: SDMTCNN}``."""
        for task, model in trained.items():
            copy_weights(model, self.get_layer(teacher_encoder_name(task)))

    def branch_model(self, branch):
        """A branch of the multi-task network (no adaptors, no teachers)."""
        self._check_branch(branch)
        return self.get_layer(NETWORK).branch_model(branch)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "model_config": self.model_config, "teacher_configs": self.teacher_configs,
                "feature_weights": self.feature_weights, "levels": self.levels,
                "adaptor_bias": self.adaptor_bias}

    @classmethod
    def from_config(cls, config):
        # Models saved before 0.3 had adaptors with a bias (and no such key).
        return cls(**{"adaptor_bias": True, **config})


def _weighted_layers(model):
    """``{name: layer}`` of the layers holding weights, looking inside nested models."""
    found = {}
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found.update(_weighted_layers(layer))
        elif layer.weights:
            found[layer.name] = layer
    return found


def copy_weights(source, target):
    """Copies the weights of ``source``'s layers into ``target``'s layers of the same name.

    Nested models are looked into on both sides, so a flat model written
    before 0.2 and a model composed of a backbone exchange weights. Every
    weight of ``target`` must be found.
    """
    wanted = _weighted_layers(target)
    copied = 0
    for name, layer in _weighted_layers(source).items():
        if name in wanted:
            wanted[name].set_weights(layer.get_weights())
            copied += len(layer.weights)
    if copied != len(target.weights):
        raise ValueError(
            f"Copied {copied} of {len(target.weights)} weights from {source.name} into "
            f"{target.name}: the architectures differ.")
