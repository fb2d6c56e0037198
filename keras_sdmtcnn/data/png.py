"""Cheap PNG checks in Python: signature, header fields and the closing chunk.

Run before a ``tf.data`` pipeline is built, so that a missing, truncated or
wrongly encoded file is reported with its path instead of failing deep inside
TensorFlow mid-epoch.
"""

import os
import struct

from keras_sdmtcnn.errors import UserError

SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOR_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


def png_header(path):
    """Returns ``(width, height, bit_depth, channels)`` of a PNG, or raises UserError."""
    try:
        with open(path, "rb") as f:
            head = f.read(33)
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 12))
            tail = f.read(12)
    except FileNotFoundError:
        raise UserError(f"Missing file {path}: every sample needs it.") from None
    except OSError as e:
        raise UserError(f"Cannot read {path}: {e}.") from None
    if len(head) < 33 or head[:8] != SIGNATURE or head[12:16] != b"IHDR":
        raise UserError(f"{path} is not a PNG file (corrupt or wrong format).")
    if tail[4:8] != b"IEND":
        raise UserError(f"{path} is truncated (no IEND chunk): re-copy the file.")
    width, height, bit_depth, color_type = struct.unpack(">IIBB", head[16:26])
    return width, height, bit_depth, _COLOR_CHANNELS.get(color_type, 0)


def check_png(path, bit_depths, channels, what):
    """Checks a PNG's bit depth and channel count, naming the file when wrong."""
    width, height, bit_depth, n = png_header(path)
    if bit_depth not in bit_depths:
        allowed = " or ".join(f"{b}-bit" for b in bit_depths)
        raise UserError(
            f"{path}: {what} must be a {allowed} PNG, found {bit_depth}-bit. "
            "Re-export the file with the right bit depth."
        )
    if n not in channels:
        raise UserError(
            f"{path}: {what} must have {' or '.join(map(str, channels))} "
            f"channel(s), found {n}."
        )
    return width, height
