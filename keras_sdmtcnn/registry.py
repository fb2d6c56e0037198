"""Imports every class a saved ``.keras`` model of this library may name.

``keras.models.load_model`` finds a custom class only once its module has
run its ``register_keras_serializable`` decorator. Commands that load models
import this module first, whichever model class (``SDMTCNN``, the
distillation wrappers), objective, optimizer, loss or weighting the file names.
"""

import keras_sdmtcnn.feature_distillation  # noqa: F401
import keras_sdmtcnn.frozen_teacher  # noqa: F401
import keras_sdmtcnn.losses  # noqa: F401
import keras_sdmtcnn.model  # noqa: F401
import keras_sdmtcnn.objectives  # noqa: F401
import keras_sdmtcnn.optimizers  # noqa: F401
import keras_sdmtcnn.weighting  # noqa: F401
