"""``data prepare``: from the official downloads to the layouts the readers take.

One module per source (``cityscapes.py``, ``nyuv2.py``, ``taskonomy.py``)
knows the raw files and their encodings; ``output.py`` owns the output
folder (atomic files, resuming, ``prepare.json``); ``arrays.py`` the
resizing rules. :func:`prepare_dataset` ties them together. The optional
packages (``h5py``, ``scipy``, ``cityscapesscripts``) come with
``pip install -e ".[prepare]"`` from the repository root.
"""

import os

from keras_sdmtcnn.errors import UserError

PREPARED_FORMATS = ("cityscapes", "nyuv2", "taskonomy")


def prepare_dataset(fmt, raw_root, out_root, size=None, splits=None, progress=None,
                    depth_units="disparity_px", normals=None, splits_csv=None, tasks=None):
    """Prepares ``raw_root`` into ``out_root``; returns ``(record, written_count)``.

    Args:
        fmt: ``"cityscapes"``, ``"nyuv2"`` or ``"taskonomy"``.
        size: ``(H, W)`` to store (default: the paper's size of the format).
        splits: the splits to write (default: train and val).
        progress: called as ``progress(done, total)`` after each sample.
        depth_units: CityScapes: ``"disparity_px"`` or ``"metres"``.
        normals: NYUv2: a folder of normals to use instead of computing them.
        splits_csv, tasks: Taskonomy: the official split CSV; the tasks to check.

    A rerun with the same arguments resumes (complete files are skipped); a
    folder prepared with other arguments, or holding other files, is refused.
    """
    from keras_sdmtcnn.data.prepare import cityscapes, nyuv2, taskonomy
    from keras_sdmtcnn.data.prepare.output import Output

    if fmt not in PREPARED_FORMATS:
        raise UserError(f"data prepare knows {', '.join(PREPARED_FORMATS)}, not {fmt!r}.")
    if not os.path.isdir(raw_root):
        raise UserError(f"RAW_ROOT {raw_root} is not a folder: give the folder the downloads "
                        "were unpacked into.")
    if os.path.abspath(raw_root) == os.path.abspath(out_root):
        raise UserError("OUT_ROOT must differ from RAW_ROOT: prepare into a new folder.")
    if fmt == "taskonomy":
        tasks = tuple(tasks or taskonomy.DEFAULT_TASKS)
        settings = {"format": fmt, "raw_root": os.path.abspath(raw_root),
                    "splits_csv": os.path.abspath(splits_csv) if splits_csv else None,
                    "tasks": list(tasks)}
        # The CSV and every building are checked before OUT_ROOT is touched.
        splits, counts = taskonomy.plan(raw_root, splits_csv, tasks)
        output = Output(out_root, settings)
        if output.complete:
            return _read(output), 0
        record = taskonomy.write_splits(raw_root, output, splits, counts, tasks)
        output.finish(record)
        return _read(output), sum(c["buildings"] for c in record["splits"].values())

    module = cityscapes if fmt == "cityscapes" else nyuv2
    size = tuple(size or module.DEFAULT_SIZE)
    if len(size) != 2 or min(size) < 1:
        raise UserError(f"--size takes two positive numbers H W, got {size}.")
    splits = tuple(splits or module.SPLITS)
    unknown = [s for s in splits if s not in module.SPLITS]
    if unknown:
        raise UserError(f"--split {unknown[0]}: {fmt} has {', '.join(module.SPLITS)}.")
    options = ({"depth_units": depth_units} if fmt == "cityscapes"
               else {"normals": os.path.abspath(normals) if normals else None})
    settings = {"format": fmt, "raw_root": os.path.abspath(raw_root), "size": list(size),
                "splits": list(splits), **options}
    # Everything cheap is checked (raw files listed and paired, mapping tables
    # read) before the output folder is touched.
    samples, convert, record = module.plan(raw_root, size, splits, **options)
    output = Output(out_root, settings)
    if output.complete:
        return _read(output), 0
    total = sum(len(v) for v in samples.values())
    done = written = 0
    for split, items in samples.items():
        for index, (_, source) in enumerate(items):
            files = [os.path.join(split, f, f"{index}.npy") for f in module.FOLDERS_OUT]
            # Each file is renamed into place whole, so one that exists is complete.
            if not output.has(*files):
                arrays = convert(source)
                for folder, array in arrays.items():
                    output.save_npy(os.path.join(split, folder, f"{index}.npy"), array)
                written += 1
            done += 1
            if progress is not None:
                progress(done, total)
    record = {**record, "size": list(size),
              "splits": {split: len(items) for split, items in samples.items()},
              "samples": {split: [stem for stem, _ in items] for split, items in samples.items()}}
    output.finish(record)
    return _read(output), written


def _read(output):
    from keras_sdmtcnn.data.prepare.output import read_record

    return read_record(output.root)
