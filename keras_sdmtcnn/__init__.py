"""keras_sdmtcnn: self-distilled multi-task CNNs (SD-MTCNN) in Keras 3.

The README's layout tour says which folder owns what. Importing the package
imports no TensorFlow.
"""

__version__ = "0.3.0"

# The package name under which every class that reaches a .keras file is
# registered (keras.saving.register_keras_serializable).
PACKAGE = "keras_sdmtcnn"

# The public names, imported on first use (importing the package stays light).
_PUBLIC = {
    "SDMTCNN": "keras_sdmtcnn.models.sdmtcnn",
    "SegNetBackbone": "keras_sdmtcnn.models.backbone",
    "ModelConfig": "keras_sdmtcnn.config.schema",
    "MultiTaskTrainer": "keras_sdmtcnn.training.trainer",
    "SelfDistillation": "keras_sdmtcnn.training.methods",
    "TwoStage": "keras_sdmtcnn.training.methods",
    "FeatureDistillation": "keras_sdmtcnn.training.methods",
    "Term": "keras_sdmtcnn.training.terms",
    "TaskLoss": "keras_sdmtcnn.training.terms",
    "OutputDistillation": "keras_sdmtcnn.training.terms",
    "SeparateObjective": "keras_sdmtcnn.training.objectives",
    "EnsembleObjective": "keras_sdmtcnn.training.objectives",
    "TeacherOnlyObjective": "keras_sdmtcnn.training.objectives",
    "ImagePreprocessing": "keras_sdmtcnn.data.preprocessing",
    "load_model": "keras_sdmtcnn.training.saving",
    "load_run": "keras_sdmtcnn.workflows.notebook",
    "Run": "keras_sdmtcnn.workflows.notebook",
    "load_recipe": "keras_sdmtcnn.config",
    "build_datasets": "keras_sdmtcnn.data.datasets",
}


def __getattr__(name):
    if name in _PUBLIC:
        import importlib

        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'keras_sdmtcnn' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_PUBLIC])
