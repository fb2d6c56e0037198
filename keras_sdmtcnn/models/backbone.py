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

import keras
from keras import layers

from keras_sdmtcnn import PACKAGE
from keras_sdmtcnn.models import layers as blocks
from keras_sdmtcnn.models.config import model_config, model_config_dict


def features_name(stage):
    """Output name of encoder stage ``stage``'s features before pooling (the skip)."""
    return f"encoder{stage}_features"


def mask_name(stage):
    """Output name of encoder stage ``stage``'s pooling mask."""
    return f"encoder{stage}_pool_mask"


BOTTLENECK = "bottleneck"


def segnet_encoder(image, config):
    """Builds the encoder on ``image``; returns the dict of named backbone outputs.

    Each stage ``i`` (1-based) is ``config.encoder_depths[i]`` conv-BN-ReLU
    layers of ``config.encoder_filters[i]`` channels (scaled by the width
    multiplier), then 2x2 max pooling; its pre-pooling features and pooling
    mask are outputs. A conv-BN-ReLU of ``config.bottleneck_filters`` after
    the last pooling is the shared bottleneck. Layers are named
    ``encoder{i}_conv{j}_conv``, ``encoder{i}_pool``, ``bottleneck_conv1_conv``...
    """
    outputs = {}
    x = image
    for i, (f, d) in enumerate(zip(config.encoder_filters, config.encoder_depths), start=1):
        x = blocks.conv_stack(x, [config.scaled(f)] * d, f"encoder{i}", config)
        pre_pool = x
        x = layers.MaxPooling2D(2, name=f"encoder{i}_pool")(pre_pool)
        outputs[features_name(i)] = pre_pool
        outputs[mask_name(i)] = blocks.PoolingMask(name=f"encoder{i}_pool_mask")([pre_pool, x])
    outputs[BOTTLENECK] = blocks.conv_bn_relu(
        x, config.scaled(config.bottleneck_filters), "bottleneck_conv1", config)
    return outputs


def encoder_outputs(model, stages):
    """The backbone's named output tensors in ``model``'s graph (from :func:`segnet_encoder`)."""
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
        model: a ``ModelConfig`` (or its dict); its encoder fields are used.
        image_size: ``(height, width)``; ``None`` entries leave a dimension free.
        input_channels: channels of the input image.
        **overrides: any ``ModelConfig`` field, e.g. ``width_multiplier=0.25``.

    Example:
        >>> backbone = SegNetBackbone(image_size=(64, 64), width_multiplier=0.25)
        >>> features = backbone(images)          # {"bottleneck": ..., ...}

    Reference:
        Badrinarayanan et al., "SegNet", TPAMI 2017; Jha et al., "SD-MTCNN",
        BMVC 2020, Sec. 4.1.
    """

    def __init__(self, model=None, image_size=(None, None), input_channels=3, **kwargs):
        kwargs.setdefault("name", "segnet_backbone")
        config, kwargs = model_config(model, kwargs)
        image_size = tuple(image_size) if image_size is not None else (None, None)
        config.check_image_size(image_size)
        image = keras.Input(shape=(*image_size, input_channels), name="image")
        super().__init__(inputs=image, outputs=segnet_encoder(image, config), **kwargs)
        self.config = config
        self.image_size, self.input_channels = image_size, int(input_channels)

    def get_config(self):
        return {"name": self.name, "trainable": self.trainable,
                "model": model_config_dict(self.config), "image_size": list(self.image_size),
                "input_channels": self.input_channels}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
