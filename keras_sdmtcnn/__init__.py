"""keras_sdmtcnn: self-distilled multi-task CNNs (SD-MTCNN) in Keras 3.

The README's layout tour says which folder owns what. Importing the package
imports no TensorFlow.
"""

__version__ = "0.2.0"

# The package name under which every class that reaches a .keras file is
# registered (keras.saving.register_keras_serializable).
PACKAGE = "keras_sdmtcnn"
