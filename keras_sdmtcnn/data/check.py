"""``python -m keras_sdmtcnn.data check ROOT --format F``: verify a dataset before a long job.

Runs, for every split, the checks ``fit`` runs before its first step (the
readers: folders, indices 0..N-1, ``.npy`` headers and sizes, PNG headers)
and then, on every file, the value checks ``fit`` runs as it reads
(``values.py``: finite, labels in range, depth not negative, unit normals),
and reports each problem with its path; then prints counts and label and
depth statistics. Exits with status 1 when any problem is found. So what
``check`` passes, ``fit`` reads, and what ``fit`` refuses, ``check`` reports.
"""

import collections
import os

import numpy as np

from keras_sdmtcnn.data.png import check_png
from keras_sdmtcnn.data.values import problems as value_problems
from keras_sdmtcnn.errors import UserError

MAX_LISTED = 20


class Report:
    def __init__(self):
        self.problems = []
        self.lines = []

    def problem(self, text):
        self.problems.append(text)

    def line(self, text):
        self.lines.append(text)


def _count(counter, values):
    uniq, n = np.unique(values, return_counts=True)
    counter.update(dict(zip(uniq.tolist(), n.tolist())))


def _label_stats(report, name, counts, ignore):
    total = sum(counts.values())
    shares = ", ".join(f"{k}: {v / total:.1%}" for k, v in sorted(counts.items()))
    report.line(f"  {name}: {shares} (ignore = {ignore})")


def check_mtan(root, fmt, report):
    from keras_sdmtcnn.data import mtan
    from keras_sdmtcnn.data.formats import get_format
    from keras_sdmtcnn.data.prepare.output import read_record

    spec = get_format(fmt)
    num_classes, ignore = spec.label_set().num_classes, spec.ignore_label
    try:
        record = read_record(root)
    except UserError as e:
        report.problem(str(e))
        return
    if record:
        units = record.get("conventions", {}).get("depth_units")
        report.line(f"written by data prepare from {record['settings']['raw_root']}"
                    + (f"; depth in {units}" if units else ""))
    for split in ("train", "val"):
        split_dir = os.path.join(root, split)
        if not os.path.isdir(split_dir):
            report.problem(f"{split_dir} does not exist")
            continue
        try:  # what fit checks before its first step
            mtan.MTANSplit(root, split, fmt, spec.tasks)
        except UserError as e:
            report.problem(str(e))
        folders = {"image": "image"}
        folders.update({t: mtan.TASK_DIRS[t] for t in spec.tasks if t in mtan.TASK_DIRS})
        try:
            folders["semantic"] = mtan.label_dir(split_dir, fmt)
        except UserError as e:
            report.problem(str(e))
        present = {k: v for k, v in folders.items() if os.path.isdir(os.path.join(split_dir, v))}
        for key in set(folders) - set(present):
            report.problem(f"{os.path.join(split_dir, folders[key])} does not exist")
        index_sets = {}
        for key, folder in present.items():
            names = [n for n in os.listdir(os.path.join(split_dir, folder)) if n.endswith(".npy")]
            index_sets[key] = {n[:-4] for n in names}
        reference = index_sets.get("image", set())
        for key, idx in index_sets.items():
            if idx != reference:
                diff = sorted(idx ^ reference)[:5]
                report.problem(f"{split_dir}/{present[key]}: indices differ from image/ (e.g. {diff})")
        labels, depth_valid, depth_total, depth_values = collections.Counter(), 0, 0, []
        shape = None
        for index in sorted(reference, key=lambda x: (len(x), x)):
            for key, folder in present.items():
                path = os.path.join(split_dir, folder, f"{index}.npy")
                if not os.path.exists(path):
                    continue
                try:
                    array = np.load(path, allow_pickle=False)
                except Exception as e:  # noqa: BLE001 - any unreadable file is reported
                    report.problem(f"{path}: cannot be read ({e})")
                    continue
                if not np.issubdtype(array.dtype, np.number):
                    report.problem(f"{path}: dtype {array.dtype} is not numeric")
                    continue
                hw = array.shape[:2]
                shape = shape or hw
                if hw != shape:
                    report.problem(f"{path}: size {hw} differs from {shape}")
                channels = {"image": 3, "normal": 3}.get(key)
                if channels and (array.ndim != 3 or array.shape[-1] != channels):
                    report.problem(f"{path}: {key} shape {array.shape}, expected (H, W, 3)")
                    continue
                found = value_problems(key, array, num_classes, ignore)
                for text in found:
                    report.problem(f"{path}: {text}")
                if found:
                    continue
                if key == "semantic":
                    _count(labels, array.astype(np.int64))
                elif key == "depth":
                    valid = array > 0
                    depth_valid += int(valid.sum())
                    depth_total += array.size
                    depth_values.append(array[valid][:: max(1, valid.sum() // 1000 or 1)])
        report.line(f"{split}: {len(reference)} samples of size {shape}")
        if labels:
            _label_stats(report, "label shares", labels, ignore)
        if depth_total:
            values = np.concatenate(depth_values) if depth_values else np.zeros(0)
            if values.size:
                report.line(f"  depth: {depth_valid / depth_total:.1%} valid, "
                            f"min {values.min():.4g}, mean {values.mean():.4g}, max {values.max():.4g}")


def check_taskonomy(root, report):
    from PIL import Image

    from keras_sdmtcnn.data import taskonomy
    from keras_sdmtcnn.data.formats import get_format

    try:
        rgb = taskonomy.find_domain_dir(root, "rgb")
    except UserError as e:
        report.problem(str(e))
        return
    domains = {"rgb": rgb}
    for task in taskonomy.DOMAINS:
        try:
            domains[task] = taskonomy.find_domain_dir(root, task)
        except UserError:
            report.line(f"(no {'/'.join(taskonomy.DOMAINS[task])} folder: task {task} absent)")
    spec = get_format("taskonomy")
    num_classes, ignore = spec.label_set().num_classes, spec.ignore_label
    labels, depth_valid, depth_total = collections.Counter(), 0, 0
    buildings = sorted(os.listdir(os.path.join(root, rgb)))
    samples = 0
    for building in buildings:
        for name in sorted(os.listdir(os.path.join(root, rgb, building))):
            parts = name.split("_")
            if not name.endswith(".png") or len(parts) < 6:
                continue
            samples += 1
            point, view = parts[1], parts[3]
            for key, domain in domains.items():
                path = os.path.join(root, domain, building,
                                    f"point_{point}_view_{view}_domain_{domain}.png")
                try:
                    bits, channels = taskonomy._EXPECT[key]
                    check_png(path, bits, channels, key)
                    with Image.open(path) as image:
                        array = np.asarray(image)
                except UserError as e:
                    report.problem(str(e))
                    continue
                except Exception as e:  # noqa: BLE001
                    report.problem(f"{path}: cannot be decoded ({e})")
                    continue
                if key == "semantic":
                    found = value_problems(key, array.astype(np.int64), num_classes, ignore)
                    for text in found:
                        report.problem(f"{path}: {text}")
                    _count(labels, array)
                elif key == "depth":
                    depth_valid += int((array < 65535).sum())
                    depth_total += array.size
    report.line(f"{samples} samples in {len(buildings)} buildings")
    if labels:
        _label_stats(report, "label shares", labels, ignore)
    if depth_total:
        report.line(f"  depth: {depth_valid / depth_total:.1%} valid (65535 = invalid)")


def check_dataset(root, fmt):
    """Checks a dataset; returns a :class:`Report` (problems and summary lines)."""
    if not os.path.isdir(root):
        raise UserError(f"Dataset root {root} does not exist.")
    report = Report()
    if fmt == "taskonomy":
        check_taskonomy(root, report)
    else:
        check_mtan(root, fmt, report)
    return report
