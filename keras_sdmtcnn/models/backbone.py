"""The shared encoder: a SegNet (VGG-style) backbone with named outputs.

keras-hub's split: a backbone is a functional graph without loss whose
outputs have names (stage features for skips, pooling masks for
unpooling, the bottleneck); task models compose it with heads. Nothing here
knows a task.

:func:`segnet_encoder` builds the graph on an input tensor and returns the
named outputs; :class:`SegNetBackbone` is that graph as a model of its own
(the frozen single-task encoders of feature distillation are ones).
``SDMTCNN`` builds the same graph inline in its own graph (see its module
for why) and :func:`encoder_outputs` finds the named outputs in any model
that holds it.
"""

import inspect

import keras
from keras import layers

from keras_sdmtcnn import PACKAGE
from keras_sdmtcnn.models import layers as blocks


def scaled(filters, width_multiplier):
    """Filters times the width multiplier, rounded, at least 1."""
    return max(1, int(round(filters * width_multiplier)))


def features_name(stage):
    """Output name of encoder stage ``stage``'s features before pooling (the skip)."""
    return f"encoder{stage}_features"


def mask_name(stage):
    """Output name of encoder stage ``stage``'s pooling mask."""
    return f"encoder{stage}_pool_mask"


BOTTLENECK = "bottleneck"


def segnet_encoder(image, filters, depths, bottleneck_filters, synchronized_bn=False):
    """Builds the encoder on ``image``; returns the dict of named backbone outputs.

    Each stage ``i`` (1-based) is ``depths[i]`` conv-BN-ReLU layers of
    ``filters[i]`` channels, then 2x2 max pooling; its pre-pooling features
    and pooling mask are outputs. A conv-BN-ReLU of ``bottleneck_filters``
    after the last pooling is the shared bottleneck. Layers are named
    ``encoder{i}_conv{j}_conv``, ``encoder{i}_pool``, ``bottleneck_conv1_conv``...
    """
    outputs = {}
    x = image
    for i, (f, d) in enumerate(zip(filters, depths), start=1):
        x = blocks.conv_stack(x, [f] * d, f"encoder{i}", synchronized_bn)
        pre_pool = x
        x = layers.MaxPooling2D(2, name=f"encoder{i}_pool")(pre_pool)
        outputs[features_name(i)] = pre_pool
        outputs[mask_name(i)] = blocks.PoolingMask(name=f"encoder{i}_pool_mask")([pre_pool, x])
    outputs[BOTTLENECK] = blocks.conv_bn_relu(
        x, bottleneck_filters, "bottleneck_conv1", synchronized_bn=synchronized_bn)
    return outputs


def encoder_outputs(model, stages):
    """The backbone's named output tensors in ``model``'s graph (built by :func:`segnet_encoder`)."""
    outputs = {}
    for i in range(1, stages + 1):
        outputs[features_name(i)] = model.get_layer(f"encoder{i}_pool").input
        outputs[mask_name(i)] = model.get_layer(mask_name(i)).output
    outputs[BOTTLENECK] = model.get_layer("bottleneck_conv1_relu").output
    return outputs


@keras.saving.register_keras_serializable(package=PACKAGE)
class SegNetBackbone(keras.Model):
    """SegNet's encoder and bottleneck, with named skip features and pooling masks.

    Outputs a dict: ``encoder{i}_features`` (stage ``i``'s features before
    pooling, for skips and attention), ``encoder{i}_pool_mask`` (where its
    max pooling took each value from, for unpooling) and ``bottleneck``.

    Args:
        image_size: ``(height, width)``; ``None`` entries leave a dimension free.
        input_channels: channels of the input image.
        width_multiplier: scales every filter count (1.0 is the paper).
        encoder_filters, encoder_depths: filters and conv layers of each
            stage (paper: 64/128/256/512 with 2/2/3/4 layers).
        bottleneck_filters: feature maps of the shared bottleneck (1024).
        synchronized_bn: synchronise BatchNorm statistics across replicas.

    Example:
        >>> backbone = SegNetBackbone(image_size=(64, 64), width_multiplier=0.25)
        >>> features = backbone(images)          # {"bottleneck": ..., ...}

    Reference:
        Badrinarayanan et al., "SegNet", TPAMI 2017; Jha et al., "SD-MTCNN",
        BMVC 2020, Sec. 4.1.
    """

    def __init__(self, image_size=(None, None), input_channels=3, width_multiplier=1.0,
                 encoder_filters=(64, 128, 256, 512), encoder_depths=(2, 2, 3, 4),
                 bottleneck_filters=1024, synchronized_bn=False, **kwargs):
        kwargs.setdefault("name", "segnet_backbone")
        image_size = tuple(image_size) if image_size is not None else (None, None)
        encoder_filters = tuple(int(f) for f in encoder_filters)
        encoder_depths = tuple(int(d) for d in encoder_depths)
        # === Functional graph ===
        image = keras.Input(shape=(*image_size, input_channels), name="image")
        outputs = segnet_encoder(
            image, [scaled(f, width_multiplier) for f in encoder_filters], encoder_depths,
            scaled(bottleneck_filters, width_multiplier), synchronized_bn)
        super().__init__(inputs=image, outputs=outputs, **kwargs)
        # === Config ===
        self.image_size = image_size
        self.input_channels = int(input_channels)
        self.width_multiplier = float(width_multiplier)
        self.encoder_filters = encoder_filters
        self.encoder_depths = encoder_depths
        self.bottleneck_filters = int(bottleneck_filters)
        self.synchronized_bn = bool(synchronized_bn)

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "image_size": list(self.image_size),
            "input_channels": self.input_channels,
            "width_multiplier": self.width_multiplier,
            "encoder_filters": list(self.encoder_filters),
            "encoder_depths": list(self.encoder_depths),
            "bottleneck_filters": self.bottleneck_filters,
            "synchronized_bn": self.synchronized_bn,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def from_model_config(cls, config, **kwargs):
        """The backbone of a model config (an ``SDMTCNN``'s): its own arguments, the rest ignored."""
        own = inspect.signature(cls.__init__).parameters
        return cls(**{k: v for k, v in config.items() if k in own and k != "self"}, **kwargs)
