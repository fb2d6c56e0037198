"""Parity of an exported model with the Keras serving graph, on real images.

Every export ends with this check: the exported file run by its own runtime
(LiteRT, ONNX Runtime, TensorFlow) against the Keras model on the same raw
pixels. A float32 export must pass :func:`failures` or it is not written;
fp16 and int8 exports record their figures.

The rule, per output, with ``scale = max(1, max |reference|)`` and ``noise``
how much the Keras model's own output moves when every input pixel moves by
:data:`NUDGE` of a pixel level (about 300 float32 roundings of the scaled
input):

- at least :data:`QUANTILE` of its values within
  ``max(RELATIVE * scale, SLACK * noise at that quantile)``;
- for class ids, at least :data:`MIN_CLASS_AGREEMENT` of pixels agree.

The largest difference is reported, not limited: at the few pixels where
an early model's normal vectors have almost no length, any two correct
computations point them anywhere.

Why: a correct float32 conversion only reorders sums, which moves values by
about 1e-6 of their scale, except where the model itself magnifies
rounding (a normal vector whose length before normalisation is near zero,
as in an early model): the nudge measures that magnification on the same
images, so the limit follows the model and not one number for all. A wrong
conversion (a weight, a layout, a padding or an epsilon wrong) moves most
values of some output by far more than that, which the quantile catches; a
test plants such faults and checks that they fail, naming the output.
"""

import numpy as np

from keras_sdmtcnn.tasks import get_task

RELATIVE = 1e-4
QUANTILE = 0.999
NUDGE = 1e-2
SLACK = 10.0
MIN_CLASS_AGREEMENT = 0.999


def _classes_outputs(tasks):
    return {get_task(t).classes_output for t in tasks if get_task(t).is_classification}


def sensitivity(nudged, raw_images):
    """``{output: (quantile, largest)}``: how far the Keras model's outputs move under a nudge.

    ``nudged(float_images)`` is the Keras serving graph on float pixels;
    each image goes through it as it is and with every pixel moved by
    :data:`NUDGE` (a seeded random sign). The same for every variant of an
    export: computed once.
    """
    moved, rng = {}, np.random.default_rng(0)
    for image in raw_images:
        pixels = image[None].astype(np.float32)
        step = rng.choice([-NUDGE, NUDGE], size=pixels.shape).astype(np.float32)
        plain = {k: np.asarray(v) for k, v in nudged(pixels).items()}
        for name, value in nudged(np.clip(pixels + step, 0, 255)).items():
            moved.setdefault(name, []).append(
                np.abs(np.asarray(value, np.float64) - plain[name]).ravel())
    return {name: (float(np.quantile(np.concatenate(v), QUANTILE)),
                   float(np.concatenate(v).max())) for name, v in moved.items()}


def parity(runtime, serve, raw_images, tasks, noise=None):
    """Compares an exported model with the Keras serving graph on raw images.

    ``noise`` is :func:`sensitivity` on the same images (``None``: no
    allowance beyond :data:`RELATIVE`). Returns ``{"samples",
    "max_abs_diff", "quantile_abs_diff", "scale", "noise_quantile"}`` (per
    output) and, for segmentation, ``class_agreement``.
    """
    diffs, scales, agree, total = {}, {}, 0, 0
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
            diffs.setdefault(name, []).append(
                np.abs(got[name].astype(np.float64) - value).ravel())
            scales[name] = max(scales.get(name, 1.0), float(np.abs(value).max()))
    report = {"samples": len(raw_images), "max_abs_diff": {}, "quantile_abs_diff": {},
              "scale": scales,
              "noise_quantile": {name: (noise or {}).get(name, (0.0, 0.0))[0]
                                 for name in diffs}}
    for name in diffs:
        values = np.concatenate(diffs[name])
        report["max_abs_diff"][name] = float(values.max())
        report["quantile_abs_diff"][name] = float(np.quantile(values, QUANTILE))
    if total:
        report["class_agreement"] = agree / total
    return report


def limit(report, name):
    """The limit of output ``name``'s :data:`QUANTILE` difference (the module's rule)."""
    return max(RELATIVE * report["scale"][name],
               SLACK * report.get("noise_quantile", {}).get(name, 0.0))


def failures(report):
    """What fails the float32 rule in a :func:`parity` report: one phrase per output."""
    found = []
    for name, typical in report["quantile_abs_diff"].items():
        if typical > limit(report, name):
            found.append(f"{name}: {QUANTILE:.1%} of values within {typical:.2e}, over the "
                         f"limit {limit(report, name):.1e} (largest difference "
                         f"{report['max_abs_diff'][name]:.2e})")
    agreement = report.get("class_agreement")
    if agreement is not None and agreement < MIN_CLASS_AGREEMENT:
        found.append(f"classes agree on {agreement:.4%} of pixels, under "
                     f"{MIN_CLASS_AGREEMENT:.1%}")
    return found
