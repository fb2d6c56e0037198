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
"""

import keras

from keras_sdmtcnn import PACKAGE


def _handle(variable):
    # A Keras variable wraps a tf.Variable (or, under a strategy, a
    # distributed one whose handle is the current device's inside update()).
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


class _FusedAdamUpdate:
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
        step = tf.cast(self.iterations + 1, tf.float32)
        beta_1 = tf.cast(self.beta_1, tf.float32)
        beta_2 = tf.cast(self.beta_2, tf.float32)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable),
            m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]),
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, tf.float32),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, tf.float32),
            grad=tf.cast(gradient, tf.float32),
        )


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusedAdam(_FusedAdamUpdate, keras.optimizers.Adam):
    """``keras.optimizers.Adam`` with a fused update (see the module docstring)."""


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusedAdamW(_FusedAdamUpdate, keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` with a fused update; decoupled weight decay
    is applied by Keras before the update, as in AdamW."""
