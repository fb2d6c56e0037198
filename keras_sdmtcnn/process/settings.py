"""Process-wide TensorFlow settings, from a recipe's ``speed`` and ``training`` sections.

Each speed switch applies only on the devices where it was measured to help
(docs/benchmarks.md); elsewhere TensorFlow's and Keras' defaults stay:

- ``speed.grappler``: ``null`` (automatic) switches TensorFlow's graph
  optimizer off on a machine without a GPU (seconds of start-up saved,
  steps no slower, measured on CPUs) and leaves it on with a GPU, where its
  layout and remapper passes feed cuDNN.
- ``speed.fused_batchnorm``: ``null`` is TensorFlow's fused BatchNorm
  kernel on CPUs (measured) and Keras' own BatchNorm on GPUs.
- ``speed.matmul_conv_grad``: the matrix-product kernel gradient, on CPUs only.
- ``speed.intra_op_threads``: ``null`` is one thread per op for small
  steps on CPUs, else TensorFlow's choice.
- ``training.mixed_precision``: ``auto`` is ``mixed_bfloat16`` on a CPU
  with native bfloat16 instructions and a step large enough to gain, else
  float32 (:func:`choose_precision`).

:data:`KERNELS` holds the kernel switches that ``models/kernels.py`` reads
when a graph is traced. :func:`in_effect` says what a process runs with
(``bench`` prints it).
"""

import sys

from keras_sdmtcnn.errors import UserError

# Which speed kernels apply (read by models/kernels.py when a graph is
# traced). Switched off, a layer computes exactly as its Keras parent, so
# saved models do not depend on them.
KERNELS = {"fused_batchnorm": True, "matmul_conv_grad": True}

# Work per train step (batch x height x width x (first block's channels /
# 64)^2, so a paper-size step is 2 x 288 x 384 = 221,184) up to which one
# thread per op is faster on CPUs. Measured on the project's 2-core CPU
# (docs/benchmarks.md, "Threads per op"), one thread against two: the
# demo's step (384) 1.4-1.5x faster; 96x128 at width 1/4, batch 8 (6,144) 1.03x
# and evaluation equal; 144x192 at width 1/2, batch 4 (27,648) training
# equal but evaluation 15% slower; the paper's size 12% slower to train.
SMALL_STEP_WORK = 8192

_IN_EFFECT = {}


def has_gpu():
    """Whether TensorFlow sees a GPU (physical devices: listing them starts no runtime)."""
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def step_work(recipe):
    """A train step's work in the units of :data:`SMALL_STEP_WORK`."""
    height, width = recipe.data.image_size
    channels = recipe.model.encoder_filters[0] * recipe.model.width_multiplier
    return recipe.training.batch_size * height * width * (channels / 64) ** 2


def configure_threads(intra_op_threads):
    """Sets the threads one TensorFlow op may use; returns the number in effect.

    ``0`` is TensorFlow's choice (one per core). TensorFlow takes the setting
    only before its first op runs; after that the process keeps what it
    started with, and that number is returned.
    """
    import tensorflow as tf

    current = tf.config.threading.get_intra_op_parallelism_threads()
    if current == intra_op_threads:
        return current
    try:
        tf.config.threading.set_intra_op_parallelism_threads(intra_op_threads)
    except RuntimeError:  # "cannot be modified after initialization"
        return current
    return intra_op_threads


def configure_process(recipe):
    """The recipe's settings that TensorFlow takes before its first op: threads per op.

    ``speed.intra_op_threads``; ``None`` (automatic) is 1 for a step of at
    most :data:`SMALL_STEP_WORK` on a machine without a GPU, else 0
    (TensorFlow's choice). Returns the threads per op in effect (0:
    TensorFlow's choice). An explicit number that comes too late (TensorFlow
    already runs in this process) is kept as it was, with a note saying so.
    """
    wanted = recipe.speed.intra_op_threads
    if wanted is None:
        wanted = 1 if step_work(recipe) <= SMALL_STEP_WORK and not has_gpu() else 0
    got = configure_threads(wanted)
    if got != wanted and recipe.speed.intra_op_threads is not None:
        print(f"note: speed.intra_op_threads: {wanted} does not apply: TensorFlow already "
              f"runs in this process with {got or 'its own choice of'} threads per op; a new "
              "process takes it.", file=sys.stderr)
    _IN_EFFECT["intra_op_threads"] = got
    return got


def configure_kernels(fused_batchnorm=True, matmul_conv_grad=True, grappler=None):
    """Turns the speed kernels on or off for graphs traced from now on.

    ``grappler``: ``False`` switches TensorFlow's graph optimizer off for the
    functions this process runs from now on, ``True`` back on (TensorFlow's
    default), ``None`` leaves it. Off, the demo's first train step took
    4.7-5.0 s instead of 7.2 s and its first evaluation step 2.0 s instead
    of 2.8-3.0 s on the project's CPUs, with steady steps unchanged
    (docs/benchmarks.md, "Start-up").
    """
    KERNELS.update(fused_batchnorm=bool(fused_batchnorm), matmul_conv_grad=bool(matmul_conv_grad))
    _IN_EFFECT.update(KERNELS)
    if grappler is not None:
        import tensorflow as tf

        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": not grappler})
        _IN_EFFECT["grappler"] = bool(grappler)


def apply_speed(model, speed):
    """The recipe's ``speed`` switches, for a built or loaded model (before its first step).

    Automatic (``null``) switches follow the device (module docstring).
    Under XLA the fused BatchNorm kernel is off: XLA's CPU compiler cannot
    evaluate the fused op's inference form (``batch-norm-inference``), and
    Keras' own BatchNorm computes the same. The evaluation step never uses
    XLA (the trainer's ``make_test_function``).
    """
    gpu = has_gpu()
    fused = (not gpu) if speed.fused_batchnorm is None else speed.fused_batchnorm
    grappler = gpu if speed.grappler is None else speed.grappler
    configure_kernels(fused_batchnorm=fused and not speed.xla,
                      matmul_conv_grad=speed.matmul_conv_grad, grappler=grappler)
    model.jit_compile = bool(speed.xla)
    _IN_EFFECT["xla"] = bool(speed.xla)


# CPU flags (Linux's /proc/cpuinfo) that mean native bfloat16 arithmetic:
# AVX-512 BF16 (AMD Zen 4 and later, Intel Cooper Lake and later), AMX
# (Intel Sapphire Rapids and later), and Arm's BF16 extension.
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def native_bf16():
    """Whether this machine's CPU has bfloat16 instructions (:data:`BF16_CPU_FLAGS`)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return bool(set(value.split()) & set(BF16_CPU_FLAGS))
    except OSError:  # not Linux: no way to tell, so no claim
        pass
    return False


def choose_precision(recipe, started_with=None):
    """``(policy, why)``: the Keras dtype policy a training runs with, and the reason.

    ``training.mixed_precision``: ``auto`` is ``mixed_bfloat16`` on a machine
    without a GPU whose CPU has native bfloat16 (:func:`native_bf16`), for
    a step larger than :data:`SMALL_STEP_WORK` (the demo's step gains
    nothing; the paper's size is 3x faster on an Intel CPU with AMX, docs/benchmarks.md), and
    float32 everywhere else, GPUs included (``mixed_float16`` or
    ``mixed_bfloat16`` there are an explicit choice). ``none`` is Keras'
    float type. ``started_with``: the policy of the run being resumed;
    ``auto`` keeps it, and any other choice must match it (a run does not
    change its numerics halfway).
    """
    import keras

    wanted = recipe.training.mixed_precision
    if wanted == "auto" and started_with:
        policy, why = started_with, "the precision this run started with"
    elif wanted == "auto":
        policy, why = _automatic_precision(recipe)
    else:
        policy = keras.config.floatx() if wanted == "none" else wanted
        why = f"training.mixed_precision: {wanted}"
    if started_with and policy != started_with:
        raise UserError(
            f"This run was trained in {started_with}; training.mixed_precision: {wanted} "
            f"would resume it in {policy}. Resume it with training.mixed_precision: auto (or "
            f"{started_with}), or start it afresh with --overwrite.")
    if policy == "mixed_bfloat16" and not native_bf16() and not has_gpu():
        print("warning: this CPU has no native bfloat16 instructions, so mixed_bfloat16 "
              "runs emulated and slower than float32 here; training.mixed_precision: auto "
              "picks float32 on such machines.", file=sys.stderr)
    return policy, why


def _automatic_precision(recipe):
    if has_gpu():
        return "float32", "auto: float32 on GPUs"
    if not native_bf16():
        return "float32", "auto: this CPU has no native bfloat16"
    if step_work(recipe) <= SMALL_STEP_WORK:
        return "float32", "auto: this step is too small for bfloat16 to gain"
    return "mixed_bfloat16", "auto: native bfloat16 on this CPU"


def configure_numerics(training, policy=None):
    """Op determinism and the Keras dtype policy (before the model is built).

    ``policy``: from :func:`choose_precision`; ``None`` is the explicit
    ``training.mixed_precision`` (``auto`` and ``none``: Keras' float type).
    """
    import keras
    import tensorflow as tf

    if training.deterministic:
        tf.config.experimental.enable_op_determinism()
    if policy is None:
        policy = training.mixed_precision
        if policy in ("auto", "none"):
            policy = keras.config.floatx()
    keras.mixed_precision.set_dtype_policy(policy)
    _IN_EFFECT.update(deterministic=bool(training.deterministic), precision=policy)
    return policy


def in_effect():
    """``{switch: value}`` this process runs with (threads, kernels, grappler, XLA, precision)."""
    return dict(_IN_EFFECT)
