"""New methods added from outside the package, through its public API alone.

Each is what a researcher would write in a notebook: one small class, then a
trainer of an SD-MTCNN network with it. They train two steps; the new term
is logged and, where it owns an adaptor, the adaptor learns.
"""

import keras
import numpy as np
from conftest import random_batch

from keras_sdmtcnn import SDMTCNN, MultiTaskTrainer, SeparateObjective, Term


class Hint(Term):
    """FitNets-style hint: the bottleneck, through an adaptor of its own, guesses the
    encoder's last stage (its features before pooling, taken as a fixed target)."""

    def __init__(self, channels, **kwargs):
        super().__init__(**kwargs)
        self.adaptor = keras.layers.Conv2DTranspose(channels, 2, strides=2, name="hint_adaptor")

    def names(self):
        return ["hint_loss"]

    def build_for(self, outputs):
        self.adaptor.build(outputs["shared_features"].shape)

    def values(self, y_true, y_pred):
        guess = self.adaptor(y_pred["shared_features"])
        target = keras.ops.stop_gradient(y_pred["shared_encoder4_features"])
        return {"hint_loss": keras.ops.mean(keras.ops.square(guess - target))}


def test_a_hint_method_from_outside_the_package_trains_its_adaptor():
    network = SDMTCNN(["depth"], image_size=(32, 32), width_multiplier=1 / 16,
                      feature_outputs=["bottleneck", "encoder4_features"])
    hint = Hint(network.config.scaled(512))
    trainer = MultiTaskTrainer.for_network(network, terms=[hint])
    trainer.compile(keras.optimizers.Adam(1e-2), SeparateObjective())
    before = hint.adaptor.get_weights()[0].copy()
    x, y = random_batch(["depth"])
    logs = [trainer.train_on_batch(x, y, return_dict=True) for _ in range(2)]
    assert logs[-1]["hint_loss"] > 0 and "hint_loss" in trainer.logged_terms()
    assert not np.array_equal(before, hint.adaptor.get_weights()[0])


class L1Distillation(SeparateObjective):
    """Eq. 5 with another output distance: the mean absolute difference."""

    def distance(self, task):
        return lambda teacher, student: keras.ops.mean(keras.ops.abs(teacher - student))


def test_a_new_output_distillation_loss_from_outside_the_package_trains():
    network = SDMTCNN(["depth", "normal"], image_size=(32, 32), width_multiplier=1 / 16)
    trainer = MultiTaskTrainer.for_network(network)
    trainer.compile(keras.optimizers.Adam(1e-2), L1Distillation(kd_weight=0.5))
    x, y = random_batch(["depth", "normal"])
    out = trainer(x, training=True)
    expected = 0.5 * np.abs(out["depth_teacher"] - out["depth_student"]).mean()
    logs = trainer.train_on_batch(x, y, return_dict=True)
    np.testing.assert_allclose(logs["depth_kd_loss"], expected, rtol=1e-4)
    assert trainer.train_on_batch(x, y, return_dict=True)["normal_kd_loss"] > 0
