"""Models as files written before version 0.2 describe them, so that old runs still load.

Before the encoder became a :class:`~keras_sdmtcnn.models.backbone.SegNetBackbone`
of its own, ``SDMTCNN`` was one flat graph, registered as
``keras_sdmtcnn>SDMTCNN``: its ``.keras`` files store every weight under the
top-level layer names. The class registered here under that old name builds
the same computation as today's ``SDMTCNN`` (the same blocks, the same layer
names, the same outputs and methods) in that flat form, so those files load,
train on, evaluate and export as before. New models are never built with it.
"""

import keras

from keras_sdmtcnn import PACKAGE
from keras_sdmtcnn.models.backbone import scaled, segnet_encoder
from keras_sdmtcnn.models.distillation import FeatureDistillationModel, FrozenTeacherStudent
from keras_sdmtcnn.models.sdmtcnn import SDMTCNN


@keras.saving.register_keras_serializable(package=PACKAGE, name="SDMTCNN")
class LegacySDMTCNN(SDMTCNN):
    """``SDMTCNN`` with the encoder inlined in the model's graph (files before 0.2)."""

    @staticmethod
    def _backbone_outputs(image, image_size, input_channels, width_multiplier,
                          encoder_filters, encoder_depths, bottleneck_filters, synchronized_bn):
        return segnet_encoder(
            image, [scaled(f, width_multiplier) for f in encoder_filters], encoder_depths,
            scaled(bottleneck_filters, width_multiplier), synchronized_bn)


@keras.saving.register_keras_serializable(package=PACKAGE, name="FrozenTeacherStudent")
class LegacyFrozenTeacherStudent(FrozenTeacherStudent):
    """``FrozenTeacherStudent`` of files before 0.2 (its networks are flat graphs)."""

    network = LegacySDMTCNN


@keras.saving.register_keras_serializable(package=PACKAGE, name="FeatureDistillationModel")
class LegacyFeatureDistillationModel(FeatureDistillationModel):
    """``FeatureDistillationModel`` of files before 0.2 (its network is a flat graph)."""

    network = LegacySDMTCNN
