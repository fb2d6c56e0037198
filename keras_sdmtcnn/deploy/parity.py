"""Parity of an exported model with the Keras serving graph, on real images.

Every export ends with this check: the exported file run by its own runtime
(LiteRT, ONNX Runtime, TensorFlow) against the Keras model on the same raw
pixels. A float32 export must agree within :data:`MAX_ABS_DIFF` on every
output and on :data:`MIN_CLASS_AGREEMENT` of pixels' classes, or it is not
written; fp16 and int8 exports record their figures.
"""

import numpy as np

from keras_sdmtcnn.tasks import get_task

MAX_ABS_DIFF = 1e-4
MIN_CLASS_AGREEMENT = 0.999


def _classes_outputs(tasks):
    return {get_task(t).classes_output for t in tasks if get_task(t).is_classification}


def parity(runtime, serve, raw_images, tasks):
    """Compares an exported model with the Keras serving graph on raw images."""
    diffs, agree, total = {}, 0, 0
    classes = _classes_outputs(tasks)
    for image in raw_images:
        batch = image[None]
        expected = {k: v.numpy() for k, v in serve(batch).items()}
        got = runtime(batch)
        for name, value in expected.items():
            if name in classes:
                agree += int(np.sum(got[name] == value))
                total += value.size
                continue
            diff = float(np.max(np.abs(got[name].astype(np.float64) - value)))
            diffs[name] = max(diffs.get(name, 0.0), diff)
    report = {"samples": len(raw_images), "max_abs_diff": diffs}
    if total:
        report["class_agreement"] = agree / total
    return report


