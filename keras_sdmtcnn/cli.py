"""What every command shares: turning a UserError into one clear line and exit 2."""

import os
import sys

# Quieter TensorFlow start-up for command-line use (the user can override).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_sdmtcnn.errors import UserError  # noqa: E402


def run(main_fn, argv=None):
    """Calls ``main_fn(argv)``; a UserError prints ``error: ...`` and exits with 2."""
    try:
        main_fn(argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
