"""Loading ``.keras`` files of this library: every class they may name is registered first.

``keras.models.load_model`` finds a custom class only once its module has
run its ``register_keras_serializable`` decorator. :func:`load_model`
imports every module that registers one (networks, preprocessing, the
trainer, terms, objectives, optimizers, losses, weightings, metrics, and
the loading shims of 0.1's and 0.2's classes, ``legacy.py``) and then
loads. A checkpoint resumes into a trainer built as a fresh start builds it
(:func:`load_checkpoint`).
"""

import os

from keras_sdmtcnn.errors import UserError


def register_all():
    """Imports every module that registers a class a saved model may name."""
    import keras_sdmtcnn.data.preprocessing  # noqa: F401
    import keras_sdmtcnn.models.backbone  # noqa: F401
    import keras_sdmtcnn.models.sdmtcnn  # noqa: F401
    import keras_sdmtcnn.training.legacy  # noqa: F401
    import keras_sdmtcnn.training.losses  # noqa: F401
    import keras_sdmtcnn.training.metrics  # noqa: F401
    import keras_sdmtcnn.training.objectives  # noqa: F401
    import keras_sdmtcnn.training.optimizers  # noqa: F401
    import keras_sdmtcnn.training.weighting  # noqa: F401


def load_model(path, compile=True):
    """Loads a ``.keras`` file written by this library (any version)."""
    import zipfile

    import keras

    register_all()
    path = str(path)
    if not os.path.isfile(path):
        raise UserError(f"{path} does not exist: is it a finished run's model file?")
    # A .keras file is a zip archive; a truncated or overwritten one is not
    # (Keras would call it "not found").
    if not zipfile.is_zipfile(path):
        raise UserError(
            f"{path} is not a valid .keras model file (truncated or corrupt). Use another "
            "checkpoint of the run (checkpoints/last.keras or best.keras), or train it again.")
    try:
        return keras.models.load_model(path, compile=compile)
    except (ValueError, KeyError, OSError, TypeError, zipfile.BadZipFile) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{path} could not be loaded as a model ({first[:200]}). It may be corrupt or "
            "written by an incompatible version; use another checkpoint of the run, or "
            "train it again.") from None


def in_float32(model):
    """``model`` rebuilt with every layer computing in float32, with its weights.

    A model trained under a mixed-precision policy keeps float32 master
    weights, so the copy computes what the model would in float32 (how
    exports are made and checked). A model that is float32 already is
    returned as it is.
    """
    import keras

    from keras_sdmtcnn.training.trainer import compute_policy

    if compute_policy(model) == "float32":
        return model

    def float32(value):  # every layer's policy, and the trainer's (MultiTaskTrainer)
        if isinstance(value, dict):
            if value.get("class_name") == "DTypePolicy" and isinstance(
                    value.get("config"), dict) and "name" in value["config"]:
                return {**value, "config": {**value["config"], "name": "float32"}}
            return {k: "float32" if k == "dtype_policy" and isinstance(v, str) else float32(v)
                    for k, v in value.items()}
        if isinstance(value, list):
            return [float32(v) for v in value]
        return value

    register_all()
    config = float32(keras.saving.serialize_keras_object(model))
    copy = keras.saving.deserialize_keras_object(config)
    copy.set_weights(model.get_weights())
    return copy


def load_model_config(path):
    """``(trained trainer, its network's config)`` of a finished SD-MTCNN run's model."""
    from keras_sdmtcnn.training.methods import SelfDistillation

    model = load_model(path, compile=False)
    if not isinstance(getattr(model, "method", None), SelfDistillation):
        raise UserError(f"{path} is not an SD-MTCNN network trained by itself (it was trained "
                        "with a stage-1 network or experts): train the run it comes from "
                        "with self-distillation or teacher_only.")
    return model, dict(model.method.network_config)


def load_checkpoint(model, path):
    """Loads a checkpoint's weights and optimizer state into ``model``, built as it was.

    ``model`` is built and compiled from the run's recipe, with its
    optimizer built, exactly as a fresh start builds it; a checkpoint
    written by that run then fills every variable, the optimizer's moments
    included (also for models with frozen parts, where loading the whole
    file would rebuild the optimizer over other variables).
    """
    import zipfile

    path = str(path)
    if not zipfile.is_zipfile(path):
        raise UserError(
            f"{path} is not a valid .keras checkpoint (truncated or corrupt). Remove the "
            "checkpoints/ folder of the run to start it afresh, or fit --overwrite.")
    try:
        model.load_weights(path)
    except (ValueError, KeyError, OSError, zipfile.BadZipFile) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"{path} does not fit the model this recipe builds ({first[:200]}): it was written "
            "by another version or recipe. Remove the run's checkpoints/ folder to start "
            "afresh, or fit --overwrite.") from None
