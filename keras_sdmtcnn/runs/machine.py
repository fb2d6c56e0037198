"""Which machine a figure was measured on: CPU model, cores, library versions."""

import os
import platform


def machine():
    """``{cpu, cores, devices, tensorflow, keras, python}`` of this machine.

    ``devices`` names what TensorFlow computes on: each GPU by name, else the CPU.
    """
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
    gpus = [tf.config.experimental.get_device_details(g).get("device_name", g.name)
            for g in tf.config.list_physical_devices("GPU")]
    return {"cpu": model, "cores": os.cpu_count(), "devices": gpus or [f"CPU ({model})"],
            "tensorflow": tf.__version__, "keras": keras.__version__,
            "python": platform.python_version()}
