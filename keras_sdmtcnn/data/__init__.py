"""Data: one reader module per file layout, the table of formats, and the pipelines.

- ``formats.py``: the table of formats (classes, ignore label, tasks, reader).
- ``taskonomy.py`` (Taskonomy PNGs, also the built-in scenes), ``mtan.py``
  (NYUv2 and CityScapes as MTAN's ``.npy`` folders), ``scenes.py`` (the
  built-in procedural scenes, written in the Taskonomy layout).
- ``preprocessing.py``: pixel scaling and normalisation, the one definition
  used by every reader and by the exported serving graph.
- ``pipeline.py`` and ``augment.py``: the seeded ``tf.data`` pipelines.
- ``datasets.py``: from a recipe's ``data`` section to ``tf.data`` splits.
- ``check.py`` and ``png.py``: the file checks behind ``data check``.

Importing this package imports no TensorFlow; the modules that need it
import it themselves.
"""
