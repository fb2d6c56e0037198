"""The Teacher's decoders: one deep decoder per task, with task attention.

Each decoder mirrors the backbone: from the bottleneck back up through every
stage, SegNet unpooling at the encoder's pooling positions (or U-Net
upsampling and concatenation), conv-BN-ReLU layers, and, in every block, an
attention gate that looks at the encoder's features of the same scale. A
decoder knows the shape of its task's output (channels, activation), not
the task.
"""

from keras import layers

from keras_sdmtcnn.models import layers as blocks
from keras_sdmtcnn.models.backbone import BOTTLENECK, features_name, mask_name


def teacher_decoder(backbone_outputs, prefix, config, channels, activation):
    """One Teacher decoder on the backbone's outputs; returns its output tensor.

    Args:
        backbone_outputs: the dict a ``SegNetBackbone`` returns.
        prefix: layer name prefix (``depth_teacher``); the output is named so.
        config: the network's ``ModelConfig``: its encoder's filters and depths
            (block ``i`` has as many layers as stage ``i``), ``decoder``
            (``"segnet"``: unpooling at the pooling positions, ``"unet"``:
            upsampling and concatenation skips) and ``attention`` (task
            attention in every block; ``False`` is the paper's Baseline-4).
        channels, activation: of the task's output (``layers.output_layer``).
    """
    stage_filters = [config.scaled(f) for f in config.encoder_filters]
    y = blocks.conv_bn_relu(backbone_outputs[BOTTLENECK], stage_filters[-1],
                            f"{prefix}_entry_conv1", config)
    for i in range(len(stage_filters), 0, -1):
        name = f"{prefix}_decoder{i}"
        skip = backbone_outputs[features_name(i)]
        if config.decoder == "segnet":
            y = blocks.Unpool2D(name=f"{name}_unpool")([y, backbone_outputs[mask_name(i)]])
        else:
            y = layers.UpSampling2D(2, name=f"{name}_upsample")(y)
            y = layers.Concatenate(name=f"{name}_skip")([y, skip])
        out_filters = stage_filters[max(i - 2, 0)]
        filters = [stage_filters[i - 1]] * (config.encoder_depths[i - 1] - 1)
        y = blocks.conv_stack(y, filters + [out_filters], name, config)
        if config.attention:
            y = blocks.attention_gate(y, skip, f"{name}_attention", config)
    return blocks.output_layer(y, channels, activation, prefix)
