"""``python -m keras_sdmtcnn COMMAND ...``: the ``sdmtcnn`` console script."""

from keras_sdmtcnn.cli import main

main()
