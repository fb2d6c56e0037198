"""Data: the built-in scenes and the readers of real dataset layouts."""

from keras_sdmtcnn.data.datasets import DatasetInfo, build_datasets  # noqa: F401
