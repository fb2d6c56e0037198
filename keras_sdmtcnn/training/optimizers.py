"""Adam and AdamW whose per-variable update is TensorFlow's fused kernel.

Keras 3 writes Adam's update as about ten separate elementwise ops per
variable, each a pass over memory; for the paper's 72M parameters that is a
noticeable part of a CPU train step. :class:`FusedAdam` and
:class:`FusedAdamW` keep Keras' optimizers as they are (same arguments,
variables, learning-rate schedules, loss scaling, weight decay, config) and
replace only ``update_step`` by ``ResourceApplyAdam``, which does the
moment updates and the parameter step in one pass. Measured on the
project's 2-core CPU the train step is about 5% faster (README,
Benchmarks). The update is Keras' (and Kingma & Ba's) exactly:

    m <- m + (g - m)(1 - beta_1);  v <- v + (g^2 - v)(1 - beta_2)
    w <- w - lr sqrt(1 - beta_2^t) / (1 - beta_1^t) * m / (sqrt(v) + epsilon)

Anything the fused kernel does not cover falls back to Keras' update:
other backends, ``amsgrad``, sparse gradients, non-float32 variables.

All three optimizers here (and :class:`SGD`) take ``layer_learning_rates``,
``{layer name: learning rate}``: the variables of those layers update with
their own rate, every other variable with ``learning_rate``. This is
PyTorch's parameter groups, which Keras does not have; Li & Bilen train
their adaptors at 0.1 while the network trains at 1e-4. Adam keeps its
moments per variable, so one Adam with two rates is exactly the authors'
two Adams sharing a step count.
"""

import keras

from keras_sdmtcnn import PACKAGE


def _handle(variable):
    # A Keras variable wraps a tf.Variable (or, under a strategy, a
    # distributed one whose handle is the current device's inside update()).
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


class _LayerLearningRates:
    """``layer_learning_rates``: some layers' variables update with their own rate."""

    def __init__(self, *args, layer_learning_rates=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.layer_learning_rates = {str(k): float(v)
                                     for k, v in (layer_learning_rates or {}).items()}

    def _own_rate(self, variable):
        # ``variable`` may be the backend's (a tf.Variable inside a traced
        # step): find the Keras variable, whose path names its layer.
        keras_variable = self._trainable_variables[self._get_variable_index(variable)]
        parts = keras_variable.path.split("/")
        return self.layer_learning_rates.get(parts[-2]) if len(parts) > 1 else None

    def update_step(self, gradient, variable, learning_rate):
        rate = self._own_rate(variable) if self.layer_learning_rates else None
        if rate is not None:
            learning_rate = keras.ops.cast(rate, variable.dtype)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        if self.layer_learning_rates:
            config["layer_learning_rates"] = dict(self.layer_learning_rates)
        return config


class _FusedAdamUpdate:
    _step_scalars = None

    def _distributed_tf_update_step(self, distribution, grads_and_vars, learning_rate):
        # The step's scalars (the bias corrections, the cast hyperparameters)
        # are the same for every variable: computed once here rather than in
        # each variable's update. Per variable that was about ten graph ops,
        # 40% of the demo's train-step graph and of its tracing time.
        self._step_scalars = (learning_rate, self._adam_scalars(learning_rate))
        try:
            return super()._distributed_tf_update_step(distribution, grads_and_vars,
                                                       learning_rate)
        finally:
            self._step_scalars = None

    def _adam_scalars(self, learning_rate):
        import tensorflow as tf

        step = tf.cast(self.iterations + 1, tf.float32)
        beta_1 = tf.cast(self.beta_1, tf.float32)
        beta_2 = tf.cast(self.beta_2, tf.float32)
        return dict(beta1_power=tf.pow(beta_1, step), beta2_power=tf.pow(beta_2, step),
                    lr=tf.cast(learning_rate, tf.float32), beta1=beta_1, beta2=beta_2,
                    epsilon=tf.cast(self.epsilon, tf.float32))

    def update_step(self, gradient, variable, learning_rate):
        import tensorflow as tf

        if (
            keras.backend.backend() != "tensorflow"
            or self.amsgrad
            or isinstance(gradient, tf.IndexedSlices)
            or variable.dtype != tf.float32
        ):
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        if self._step_scalars is not None:
            source, scalars = self._step_scalars
            if learning_rate is not source:  # a layer with its own rate
                scalars = {**scalars, "lr": tf.cast(learning_rate, tf.float32)}
        else:
            scalars = self._adam_scalars(learning_rate)
        # Keras' Adam keeps its moments in _momentums/_velocities (internal,
        # pinned to Keras 3.15): the fused update must write the same slots
        # so that checkpoints stay Keras' own.
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable),
            m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]),
            grad=tf.cast(gradient, tf.float32),
            **scalars,
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusedAdam(_LayerLearningRates, _FusedAdamUpdate, keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with a fused update (see the module docstring)."""


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusedAdamW(_LayerLearningRates, _FusedAdamUpdate, keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` with a fused update; decoupled weight decay
    is applied by Keras before the update, as in AdamW."""


@keras.saving.register_keras_serializable(package=PACKAGE)
class SGD(_LayerLearningRates, keras.optimizers.SGD):
    """``keras.optimizers.SGD`` with ``layer_learning_rates``."""
