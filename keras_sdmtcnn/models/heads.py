"""The Student's heads: a few stride-2 transposed convolutions straight off the bottleneck.

The cheap branch that goes to the phone (paper Sec. 4.1): each head is one
stride-2 3x3 transposed convolution with BatchNorm and ReLU per encoder
stage, back to the input resolution, then the task's 1x1 output layer. A
head knows the shape of its task's output, not the task.
"""

from keras_sdmtcnn.models import layers as blocks
from keras_sdmtcnn.models.backbone import BOTTLENECK


def student_head(backbone_outputs, prefix, config, channels, activation):
    """One Student head on the backbone's outputs; returns its output tensor.

    One stride-2 transposed convolution per ``config.student_filters`` entry
    (scaled by the width multiplier). Layers are named
    ``{prefix}_deconv{j}_*``; the output is named ``prefix``.
    """
    # Under a mixed-precision policy the heads compute in float32, off the
    # bottleneck in the policy's type. Over 10 seeds of the demo recipe, with
    # bfloat16 heads the Student ended 1.1-1.7 float32 standard deviations
    # below float32 on segmentation, normals and edges; with float32 heads,
    # over 20 seeds, 0.05, 0.54 and -0.18 (docs/precision_20_seeds.md). The
    # paper-size bfloat16 step is 1-4% slower for it (docs/benchmarks.md).
    dtype = blocks.full_precision()
    z = backbone_outputs[BOTTLENECK]
    for j, f in enumerate(config.student_filters, start=1):
        z = blocks.deconv_bn_relu(z, config.scaled(f), f"{prefix}_deconv{j}", config, dtype)
    return blocks.output_layer(z, channels, activation, prefix)
