"""What every ``data prepare`` format shares: optional imports, PNG reading, pairing."""

import importlib
import os

import numpy as np

from keras_sdmtcnn.errors import UserError

# From a clone (the package is installed from its repository).
EXTRA = 'pip install -e ".[prepare]" (from the repository root)'


def optional_import(module, purpose):
    """Imports an optional dependency, or stops with the extra that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UserError(
            f"{purpose} needs the Python package {module.split('.')[0]!r}, which is not "
            f"installed: {EXTRA}"
        ) from None


def read_png(path, what, bits=None):
    """A PNG's pixels as a numpy array (``bits``: the bit depth it must have)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            array = np.asarray(image)
    except FileNotFoundError:
        raise UserError(f"Missing file {path} ({what}).") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise UserError(f"{path} ({what}) cannot be decoded ({e}); download it again.") from None
    if bits == 16 and array.dtype not in (np.uint16, np.int32, np.uint32, np.int16):
        raise UserError(f"{path} ({what}) is not a 16-bit PNG (found {array.dtype}).")
    return array


def listed(folder, suffix, what):
    """``{stem: path}`` of the files ending in ``suffix`` directly in ``folder``."""
    if not os.path.isdir(folder):
        raise UserError(f"Missing folder {folder} ({what}): unpack the archive there, or "
                        "point RAW_ROOT at the folder that holds it.")
    return {name[: -len(suffix)]: os.path.join(folder, name)
            for name in sorted(os.listdir(folder)) if name.endswith(suffix)}


def pair_up(groups, where):
    """Checks that every group (``{kind: {stem: path}}``) names the same stems."""
    kinds = list(groups)
    reference = groups[kinds[0]]
    for kind in kinds[1:]:
        missing = sorted(set(reference) - set(groups[kind]))
        extra = sorted(set(groups[kind]) - set(reference))
        if missing or extra:
            stem = (missing or extra)[0]
            lacks = kind if missing else kinds[0]
            raise UserError(
                f"In {where}, {kinds[0]} and {kind} files do not pair up by name: {stem} has no "
                f"{lacks} file ({len(missing) + len(extra)} unpaired). Unpack the matching "
                "archives of the same release, or remove the unpaired files."
            )
