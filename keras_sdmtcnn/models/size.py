"""Parameters and forward FLOPs of the full model, the Teacher and the Student.

FLOPs are counted from the layers' static shapes: 2 x multiply-accumulates of
every convolution, transposed convolution and dense layer (biases added);
BatchNorm, ReLU, pooling, unpooling and gating are elementwise and not
counted (they are under 1% here). The Teacher is the encoder plus the
attention decoders, the Student the encoder plus the deconvolution heads:
each counts the shared encoder once.
"""


def layer_flops(layer):
    """Forward FLOPs of one layer for a batch of 1 (0 for uncounted layers)."""
    import keras

    if isinstance(layer, keras.layers.Conv2DTranspose):
        _, h, w, cin = layer.input.shape
        kh, kw = layer.kernel_size
        cout = layer.filters
        return 2 * h * w * cin * cout * kh * kw + (
            layer.output.shape[1] * layer.output.shape[2] * cout if layer.use_bias else 0
        )
    if isinstance(layer, keras.layers.Conv2D):
        _, h, w, cout = layer.output.shape
        cin = layer.input.shape[-1]
        kh, kw = layer.kernel_size
        return 2 * h * w * cout * kh * kw * cin // layer.groups + (h * w * cout if layer.use_bias else 0)
    if isinstance(layer, keras.layers.Dense):
        return 2 * layer.input.shape[-1] * layer.units
    return 0


def count_flops(model):
    """Forward FLOPs of a functional model with a static input size, batch 1."""
    shape = model.inputs[0].shape
    if any(s is None for s in shape[1:]):
        raise ValueError(
            f"FLOPs need a fixed input size, the model takes {tuple(shape)}: "
            "build it with image_size=(height, width)."
        )
    return sum(layer_flops(layer) for layer in _leaf_layers(model))


def _leaf_layers(model):
    """Every layer of a model, looking inside nested models (the backbone)."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaf_layers(layer)
        else:
            yield layer


def model_size(model):
    """Parameters and FLOPs of the full model, the Teacher and the Student."""
    out = {}
    for name, sub in (("full", model), ("teacher", model.teacher_model()),
                      ("student", model.student_model())):
        out[name] = {"params": int(sub.count_params()), "flops": int(count_flops(sub))}
    out["student_flops_share"] = out["student"]["flops"] / out["teacher"]["flops"]
    return out


def size_of(tasks, **model_args):
    """:func:`model_size` of an ``SDMTCNN`` built from ``model_args`` (bad ones: UserError)."""
    from keras_sdmtcnn.errors import UserError
    from keras_sdmtcnn.models.sdmtcnn import SDMTCNN

    try:
        model = SDMTCNN(tasks, **model_args)
    except ValueError as e:
        raise UserError(str(e)) from None
    return model_size(model)
