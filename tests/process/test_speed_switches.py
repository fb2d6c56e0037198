"""The speed switches of ``process/settings.py``: XLA, grappler, threads per op."""

import os

import numpy as np
import pytest
from conftest import REPO


# Opt-in (-m slow): XLA is off by default (speed.xla), and compiling the demo's step
# takes about 20 s of the default suite's budget.
@pytest.mark.slow
def test_xla_trains_the_demo_model_and_matches_the_graph_step(tmp_path):
    # speed.xla: the train step is XLA-compiled (the fused BatchNorm kernel
    # off, the evaluation step a plain graph); one step from the same weights
    # gives the same loss as without XLA.
    import keras
    from conftest import random_batch

    from keras_sdmtcnn.config import recipe_from_dict
    from keras_sdmtcnn.process.settings import KERNELS as ENABLED
    from keras_sdmtcnn.training.builders import compiled_model

    recipe = recipe_from_dict({
        "data": {"tasks": ["semantic", "depth", "normal"], "image_size": [32, 32]},
        "model": {"width_multiplier": 0.0625, "bottleneck_filters": 64,
                  "encoder_depths": [1, 1, 1, 1]},
        "speed": {"xla": True},
    })
    x, y = random_batch(["semantic", "depth", "normal"], num_classes=7, ignore_label=0)
    keras.utils.set_random_seed(0)
    model = compiled_model(recipe, 7, 0)
    assert model.jit_compile and not ENABLED["fused_batchnorm"]
    start = model.get_weights()
    xla_logs = model.train_on_batch(x, y, return_dict=True)
    evaluation = model.evaluate(x, y, return_dict=True, verbose=0)
    assert np.isfinite(evaluation["depth_teacher_abs_err"])
    plain = compiled_model(recipe_from_dict(_plain(recipe)), 7, 0)
    assert not plain.jit_compile and ENABLED["fused_batchnorm"]
    plain.set_weights(start)
    plain_logs = plain.train_on_batch(x, y, return_dict=True)
    assert xla_logs["loss"] == pytest.approx(plain_logs["loss"], rel=1e-4)


def test_speed_grappler_switches_tensorflows_graph_optimizer():
    import dataclasses

    import tensorflow as tf

    from keras_sdmtcnn.config.schema import SpeedConfig
    from keras_sdmtcnn.process.settings import apply_speed

    class Model:
        jit_compile = False

    try:
        apply_speed(Model(), SpeedConfig())  # the default: off
        assert tf.config.optimizer.get_experimental_options()["disable_meta_optimizer"]
        apply_speed(Model(), dataclasses.replace(SpeedConfig(), grappler=True))
        assert not tf.config.optimizer.get_experimental_options().get(
            "disable_meta_optimizer", False)
    finally:
        apply_speed(Model(), SpeedConfig())


def test_threads_per_op_one_for_small_steps_and_kept_once_tensorflow_runs(capsys):
    # speed.intra_op_threads: automatic is 1 for the demo's step and
    # TensorFlow's choice at the paper's size; TensorFlow takes the setting
    # only before its first op, so here (it has run) the process keeps its
    # number, and only an explicit request says that it does not apply.
    import tensorflow as tf

    from keras_sdmtcnn.config import load_recipe
    from keras_sdmtcnn.process.settings import SMALL_STEP_WORK, configure_process, step_work

    demo = load_recipe(os.path.join(REPO, "recipes", "synthetic.yaml"))
    paper = load_recipe(os.path.join(REPO, "recipes", "nyuv2.yaml"), ["data.root=/d"])
    assert step_work(demo) == 8 * 48 * 64 / 64 <= SMALL_STEP_WORK
    assert step_work(paper) == 2 * 288 * 384 > SMALL_STEP_WORK
    tf.constant(1.0) + 1.0  # TensorFlow runs
    current = tf.config.threading.get_intra_op_parallelism_threads()
    assert configure_process(paper) == current
    assert capsys.readouterr().err == ""
    paper.speed.intra_op_threads = current + 1
    assert configure_process(paper) == current
    note = capsys.readouterr().err
    assert note.startswith(f"note: speed.intra_op_threads: {current + 1} does not apply")
    assert tf.config.threading.get_intra_op_parallelism_threads() == current


def _plain(recipe):
    from keras_sdmtcnn.config import recipe_to_dict

    values = recipe_to_dict(recipe)
    values["speed"] = {"xla": False}
    return values
