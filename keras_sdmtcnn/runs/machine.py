"""Which machine a figure was measured on: CPU model, cores, library versions."""

import os
import platform


def machine():
    """``{cpu, cores, tensorflow, keras, python}`` of this machine."""
    import keras
    import tensorflow as tf

    model = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "python": platform.python_version()}
