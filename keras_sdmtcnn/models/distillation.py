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
  is mapped by a task-specific **adaptor** ``A_t`` (a 1x1 convolution) and
  pulled towards the teacher's bottleneck (their Eq. 3-5)::

      loss = task losses (the objective's) + sum_t lambda_t * d(A_t(phi(x)), phi_t(x))
      d(a, b) = || a / ||a||_2 - b / ||b||_2 ||^2      (Eq. 4; losses.FeatureDistance)

  The adaptors train with the network (with the same optimizer and learning
  rate; the paper gives them their own) and are discarded at export.

Trained weights are copied in by layer name (:func:`copy_weights`), looking
inside nested models, so a single-task ``SDMTCNN`` (encoder inline) fills a
``SegNetBackbone``.
"""

import keras
from keras import layers

from keras_sdmtcnn import PACKAGE
from keras_sdmtcnn.models.backbone import BOTTLENECK, SegNetBackbone
from keras_sdmtcnn.models.sdmtcnn import FEATURES, SDMTCNN
from keras_sdmtcnn.tasks import output_name
from keras_sdmtcnn.training.losses import FeatureDistance
from keras_sdmtcnn.training.trainer import MultiTaskTrainer

TEACHER_NETWORK = "frozen_teacher"
STUDENT_NETWORK = "student_network"
TEACHER = f"{TEACHER_NETWORK}_teacher"  # the sub-model layers, named by branch_model
STUDENT = f"{STUDENT_NETWORK}_student"
NETWORK = "multi_task_network"


def adapted_name(task):
    return f"{task}_adapted_features"


def target_name(task):
    return f"{task}_teacher_features"


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
    """

    def __init__(self, model_config, teacher_configs, feature_weights=None, **kwargs):
        model_config = dict(model_config)
        teacher_configs = {t: dict(c) for t, c in teacher_configs.items()}
        net = SDMTCNN(**{**model_config, "feature_outputs": True, "name": NETWORK})
        names = [output_name(t, b) for t in net.tasks for b in net.branches]
        image = keras.Input(shape=net.inputs[0].shape[1:], name="image")
        out = net(image)
        outputs = {n: layers.Identity(name=n)(out[n]) for n in names}
        for task, config in teacher_configs.items():
            if task not in net.tasks:
                raise ValueError(f"Feature teacher for {task!r}, which is not in {net.tasks}.")
            encoder = SegNetBackbone.from_model_config(config, name=teacher_encoder_name(task))
            encoder.trainable = False
            target = encoder(image)[BOTTLENECK]
            adapted = layers.Conv2D(target.shape[-1], 1, name=f"{task}_adaptor")(out[FEATURES])
            outputs[adapted_name(task)] = layers.Identity(name=adapted_name(task))(adapted)
            outputs[target_name(task)] = layers.Identity(name=target_name(task))(target)
        super().__init__(inputs=image, outputs=outputs, **kwargs)
        self.model_config, self.teacher_configs = model_config, teacher_configs
        self.feature_weights = {t: float((feature_weights or {}).get(t, 1.0))
                                for t in teacher_configs}
        self.tasks = net.tasks
        self.num_classes, self.ignore_label = net.num_classes, net.ignore_label
        self.image_size = net.image_size
        self.branches = net.branches
        self._feature_tasks = list(teacher_configs)

    def extra_term_names(self):
        return [f"{t}_feature_loss" for t in self._feature_tasks]

    def extra_terms(self, y, y_pred):
        distance = FeatureDistance()
        return {
            f"{t}_feature_loss": self.feature_weights[t]
            * distance(y_pred[target_name(t)], y_pred[adapted_name(t)])
            for t in self._feature_tasks
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
                "feature_weights": self.feature_weights}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


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
