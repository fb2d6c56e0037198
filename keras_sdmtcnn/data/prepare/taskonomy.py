"""Mini-Taskonomy: split files from the official split CSV, and a check of every building.

The official split files (``train_val_test_{tiny,medium,full}.csv``) have a
header ``id,train,val,test`` and one row per building with 1 in the column
of its split. ``data prepare taskonomy`` writes ``OUT_ROOT/{train,val,test}.txt``
(one building a line, what ``data.train_split`` and ``data.val_split``
take) after checking that every listed building has a folder in every
domain the tasks need, holding the same points and views as ``rgb``.
"""

import csv
import os

from keras_sdmtcnn.data.formats import TASKONOMY_DOMAINS
from keras_sdmtcnn.errors import UserError

SPLITS = ("train", "val", "test")
DEFAULT_TASKS = ("semantic", "depth", "normal", "keypoints", "edges")


def read_split_csv(path):
    """``{split: [building, ...]}`` from an official split CSV."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise UserError(f"Missing split file {path} (--splits-csv): give the official "
                        "train_val_test_*.csv.") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path} is not a CSV text file ({e}).") from None
    header = set(rows[0]) if rows else set()
    if not {"id", *SPLITS} <= header:
        raise UserError(f"{path}: the header must name id,train,val,test (found "
                        f"{','.join(sorted(h for h in header if h)) or 'nothing'}).")
    out = {split: [] for split in SPLITS}
    for line, row in enumerate(rows, start=2):
        flags = [split for split in SPLITS if (row[split] or "").strip() == "1"]
        if any((row[s] or "").strip() not in ("0", "1") for s in SPLITS):
            raise UserError(f"{path} line {line}: train/val/test must be 0 or 1.")
        if len(flags) > 1:
            raise UserError(f"{path} line {line}: building {row['id']} is in "
                            f"{' and '.join(flags)}.")
        if flags:
            out[flags[0]].append(row["id"].strip())
    return out


def _domain(raw_root, key):
    for name in TASKONOMY_DOMAINS[key]:
        if os.path.isdir(os.path.join(raw_root, name)):
            return name
    raise UserError(f"Missing folder {os.path.join(raw_root, TASKONOMY_DOMAINS[key][0])} "
                    f"({key}): unpack that domain's archives into RAW_ROOT.")


def _points(folder, domain):
    suffix = f"_domain_{domain}.png"
    return {name[: -len(suffix)] for name in os.listdir(folder) if name.endswith(suffix)}


def check_buildings(raw_root, buildings, tasks):
    """Every building has every domain's folder with the points of ``rgb``; returns counts."""
    domains = {key: _domain(raw_root, key) for key in ("rgb", *tasks)}
    problems, points = [], {}
    for building in buildings:
        rgb_dir = os.path.join(raw_root, domains["rgb"], building)
        if not os.path.isdir(rgb_dir):
            problems.append(f"{rgb_dir} is missing")
            continue
        reference = _points(rgb_dir, domains["rgb"])
        points[building] = len(reference)
        for key in tasks:
            folder = os.path.join(raw_root, domains[key], building)
            if not os.path.isdir(folder):
                problems.append(f"{folder} is missing")
            elif _points(folder, domains[key]) != reference:
                problems.append(f"{folder} does not hold the points and views of {rgb_dir}")
    if problems:
        raise UserError(f"{len(problems)} building folder(s) missing or incomplete under "
                        f"{raw_root}: {'; '.join(problems[:3])}. Download those buildings, or "
                        "leave them out of the split file.")
    return points


def plan(raw_root, splits_csv, tasks=DEFAULT_TASKS):
    """Reads and checks everything (before any output exists): ``(splits, counts)``."""
    if splits_csv is None:
        raise UserError("data prepare taskonomy needs --splits-csv, the official "
                        "train_val_test_*.csv.")
    splits = read_split_csv(splits_csv)
    counts = {}
    for split, buildings in splits.items():
        if not buildings and split != "test":
            raise UserError(f"{splits_csv} puts no building in {split}.")
        points = check_buildings(raw_root, buildings, tasks)
        counts[split] = {"buildings": len(buildings), "points": sum(points.values())}
    return splits, counts


def write_splits(raw_root, output, splits, counts, tasks):
    """Writes ``{split}.txt`` into ``output`` (an ``Output``); returns the record."""
    for split, buildings in splits.items():
        output.save_text(f"{split}.txt", "".join(f"{b}\n" for b in buildings))
    return {
        "splits": counts,
        "use": {"data.root": os.path.abspath(raw_root),
                "data.train_split": output.path("train.txt"),
                "data.val_split": output.path("val.txt")},
        "conventions": {"tasks_checked": list(tasks)},
    }
