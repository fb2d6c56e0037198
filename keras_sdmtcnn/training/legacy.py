"""Loading shims: the classes 0.1 and 0.2 wrote into ``.keras`` files, as trainers of today.

Until 0.2 the network was its own trainer (``SDMTCNN``) and Baseline-3 and
Li & Bilen were model classes of their own (``FrozenTeacherStudent``,
``FeatureDistillationModel``). A file naming one of these loads as a
:class:`~keras_sdmtcnn.training.trainer.MultiTaskTrainer` whose graph has the
layers, names and nesting the old class built, so every saved weight finds
its place, and whose compile config (optimizer, objective) is the file's.
Nothing here is used to train new runs.
"""

import keras
from keras import layers

from keras_sdmtcnn import PACKAGE
from keras_sdmtcnn.models.backbone import SegNetBackbone
from keras_sdmtcnn.models.sdmtcnn import feature_output, network_config
from keras_sdmtcnn.training.methods import (
    METHODS,
    FeatureDistillation,
    SelfDistillation,
    TwoStage,
)
from keras_sdmtcnn.training.trainer import MultiTaskTrainer


class _Shim:
    """A registered name whose ``from_config`` makes a trainer (never instantiated)."""

    def get_config(self):  # what registration asks of a class
        return {}


@keras.saving.register_keras_serializable(package=PACKAGE, name="SDMTCNN")
class LegacySDMTCNN(_Shim):
    """0.1's and 0.2's ``SDMTCNN`` (network and trainer in one): SD-MTCNN's trainer."""

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        name = config.pop("name", "sdmtcnn")
        config.pop("trainable", None)
        return MultiTaskTrainer(SelfDistillation(network_config(config)), name=name)


@keras.saving.register_keras_serializable(package=PACKAGE, name="FrozenTeacherStudent")
class LegacyFrozenTeacherStudent(_Shim):
    """0.2's Baseline-3 model: the two-stage method, its networks named as 0.2 named them."""

    @classmethod
    def from_config(cls, config):
        method = TwoStage(_network(config["teacher_config"]), _network(config["student_config"]),
                          names=("frozen_teacher", "student_network"))
        return MultiTaskTrainer(method, name=config.get("name", "two_stage"))


class _FeatureDistillation02(FeatureDistillation):
    """Li & Bilen as 0.2 composed it: adaptors inside the graph, experts named
    ``{task}_single_task_encoder``. Loaded to evaluate and export; its
    feature terms are not rebuilt (their adaptors are layers of the graph)."""

    kind = "feature_distillation_0_2"

    def __init__(self, *args, adaptor_bias=True, **kwargs):
        super().__init__(*args, **kwargs)
        self.adaptor_bias = adaptor_bias

    def compose(self):
        backbone_names = self._backbone_names()
        image, out, outputs = self._network_graph(backbone_names)
        net = self.network
        for task, config in self.expert_configs.items():
            encoder = SegNetBackbone(model=config.get("model"), image_size=net.image_size,
                                     name=f"{task}_single_task_encoder")
            encoder.trainable = False
            features = encoder(image)
            for level, backbone_name in zip(self.levels, backbone_names):
                suffix = "" if level == "last" else f"_{level}"
                target = features[backbone_name]
                adapted = layers.Conv2D(target.shape[-1], 1, use_bias=self.adaptor_bias,
                                        name=f"{task}{suffix}_adaptor")(
                    out[feature_output(backbone_name)])
                for name, tensor in ((f"{task}{suffix}_adapted_features", adapted),
                                     (f"{task}{suffix}_teacher_features", target)):
                    outputs[name] = layers.Identity(name=name)(tensor)
        return image, outputs

    def terms(self):
        return []


@keras.saving.register_keras_serializable(package=PACKAGE, name="FeatureDistillationModel")
class LegacyFeatureDistillationModel(_Shim):
    """0.2's Li & Bilen model (before 0.2 its adaptors had a bias)."""

    @classmethod
    def from_config(cls, config):
        method = _FeatureDistillation02(
            _network(config["model_config"]),
            {t: _network(c) for t, c in config["teacher_configs"].items()},
            config.get("feature_weights"), config.get("levels", ("last",)),
            adaptor_bias=config.get("adaptor_bias", True))
        return MultiTaskTrainer(method, name=config.get("name", "feature_distilled"))


def _network(config):
    """A 0.2 network config (its architecture fields flat) in today's form."""
    return network_config({k: v for k, v in config.items() if k not in ("name", "trainable")})


METHODS[_FeatureDistillation02.kind] = _FeatureDistillation02  # a loaded one saves again
