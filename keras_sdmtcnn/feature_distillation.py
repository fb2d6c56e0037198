"""Li & Bilen's feature distillation from frozen single-task teachers (ECCV-W 2020).

Each task ``t`` has a single-task network trained beforehand (a run of this
library with ``data.tasks: [t]``). Its encoder is frozen and, at train time,
the multi-task network's shared features ``phi(x)`` (the bottleneck) are
mapped by a task-specific **adaptor** ``A_t``, a 1x1 convolution, and pulled
towards the teacher's features (their Eq. 3-5)::

    loss = task losses (the objective's) + sum_t lambda_t * d(A_t(phi(x)), phi_t(x))
    d(a, b) = || a / ||a||_2 - b / ||b||_2 ||^2        (Eq. 4; losses.FeatureDistance)

The features are L2-normalised over the channels at each pixel and the
distance averaged over pixels. The adaptors train with the network (with
the same optimizer and learning rate; the paper gives them their own) and
are discarded at export: the Teacher and Student sub-models are those of
the multi-task network.
"""

import keras
from keras import layers

from keras_sdmtcnn.layers import PACKAGE
from keras_sdmtcnn.losses import FeatureDistance
from keras_sdmtcnn.model import SDMTCNN
from keras_sdmtcnn.tasks import output_name
from keras_sdmtcnn.training import MultiTaskTrainer

NETWORK = "multi_task_network"
FEATURES = "shared_features"


def adapted_name(task):
    return f"{task}_adapted_features"


def target_name(task):
    return f"{task}_teacher_features"


@keras.saving.register_keras_serializable(package=PACKAGE)
class FeatureDistillationModel(MultiTaskTrainer):
    """An SD-MTCNN trained with feature distillation from single-task encoders.

    Args:
        model_config: ``SDMTCNN`` config of the multi-task network.
        teacher_configs: ``{task: SDMTCNN config}`` of the single-task
            teachers (their encoder weights are copied in with
            :meth:`load_teachers`, or restored from a checkpoint).
        feature_weights: ``{task: lambda_t}`` (default 1 for each).
    """

    def __init__(self, model_config, teacher_configs, feature_weights=None, **kwargs):
        model_config = dict(model_config)
        teacher_configs = {t: dict(c) for t, c in teacher_configs.items()}
        net = SDMTCNN(**{**model_config, "name": NETWORK})
        names = [output_name(t, b) for t in net.tasks for b in net.branches]
        features = net.get_layer("bottleneck_conv1_relu").output
        combined = keras.Model(
            net.inputs[0], {**{n: net.get_layer(n).output for n in names}, FEATURES: features},
            name=NETWORK)
        image = keras.Input(shape=net.inputs[0].shape[1:], name="image")
        out = combined(image)
        outputs = {n: layers.Identity(name=n)(out[n]) for n in names}
        for task, config in teacher_configs.items():
            if task not in net.tasks:
                raise ValueError(f"Feature teacher for {task!r}, which is not in {net.tasks}.")
            encoder = SDMTCNN(**{**config, "name": f"{task}_single_task"}).encoder_model()
            encoder.trainable = False
            target = encoder(image)
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
        """Copies the encoder weights of trained single-task models ``{task: SDMTCNN}``."""
        from keras_sdmtcnn.teachers import copy_weights

        for task, model in trained.items():
            copy_weights(model.encoder_model(), self.get_layer(f"{task}_single_task_encoder"))

    def branch_model(self, branch):
        """A branch of the multi-task network (no adaptors, no teachers)."""
        self._check_branch(branch)
        combined = self.get_layer(NETWORK)
        outputs = {output_name(t, branch): combined.get_layer(output_name(t, branch)).output
                   for t in self.tasks}
        return keras.Model(combined.inputs[0], outputs, name=f"sdmtcnn_{branch}")

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "model_config": self.model_config, "teacher_configs": self.teacher_configs,
                "feature_weights": self.feature_weights}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
