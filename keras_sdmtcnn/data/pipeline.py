"""The training and evaluation ``tf.data`` pipelines shared by every reader.

A reader provides a dict of per-sample file paths, a ``decode`` function
(paths -> ``(image, {task: target})``) and its sample count; this module
does the rest:

- :func:`eval_pipeline`: decode in parallel, batch, prefetch; the order of
  the files. A small split is decoded once and read from memory on every
  pass (``fit`` validates after every epoch).
- :func:`train_pipeline`: one shuffle **per epoch, seeded by (seed, epoch)**,
  augmentation drawn from stateless seeds ``(seed, epoch, index)``, batching
  within each epoch, and prefetching. Epoch ``e`` therefore sees the same
  samples in the same order with the same augmentation whether training
  started at epoch 0 or resumed at ``e``: an interrupted run that resumes
  reaches the same weights (with deterministic ops) as one that was not.
  A small training split (decoded, at most ``IN_MEMORY_LIMIT_MB``) is
  decoded once and each epoch gathers its samples from memory: the same
  batches, without decoding every file again each epoch on cores the train
  step needs (recipe key ``speed.decoded_in_memory``).
"""

import tensorflow as tf

from keras_sdmtcnn.data.augment import random_augment

_SEED_MIX = 1_000_003

# The largest decoded split kept in memory (``in_memory=True``).
# The decoded samples become constants of the input pipeline's graph, which
# a distribution strategy serialises (protocol buffers stop at 2 GB).
IN_MEMORY_LIMIT_MB = 256


def _as_written(fn):
    """``fn`` for a ``tf.data`` transformation, traced without AutoGraph.

    tf.data converts every function it traces with AutoGraph first; for the
    first pipeline of a process that conversion took about 0.9 s of the
    demo's start on the project's 2-core CPU (a decode map traced in 1.01 s
    converted, 0.09 s as written). The functions given to this module branch
    on their arguments and settings, not on tensors (``random_augment`` uses
    ``tf.cond``), so they trace the same graph as written.
    """
    return tf.autograph.experimental.do_not_convert(fn)


def _options(ds):
    options = tf.data.Options()
    # Samples are files listed in one tensor: shard by data, not by file.
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return ds.with_options(options)


def eval_pipeline(paths, decode, batch_size, in_memory=False):
    """One ordered pass over the samples, in batches of ``batch_size``.

    ``in_memory=True``: when the decoded samples take at most
    ``IN_MEMORY_LIMIT_MB``, decode them once, here, and read every pass from
    memory (``fit`` validates after every epoch); the batches are the same.
    """
    tensors = {k: tf.constant(v) for k, v in paths.items()}
    num_samples = int(next(iter(tensors.values())).shape[0])
    decoded = (_decoded_in_memory(tensors, decode, num_samples)
               if in_memory and num_samples else None)
    if decoded is not None:
        ds = tf.data.Dataset.from_tensor_slices(decoded)
    else:
        ds = tf.data.Dataset.from_tensor_slices(tensors).map(
            _as_written(decode), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return _options(ds.batch(batch_size).prefetch(tf.data.AUTOTUNE))


def train_pipeline(paths, decode, num_samples, batch_size, seed=0, epochs=None,
                   initial_epoch=0, steps_per_epoch=None, scale=False, flip=False,
                   cache=False, depth_zoom="divide", in_memory=False):
    """Batches of ``(image, targets)`` for epochs ``initial_epoch .. epochs - 1``.

    Each epoch yields ``steps_per_epoch`` batches (default: one pass over the
    samples, the last batch possibly smaller). ``epochs=None`` runs forever.
    With ``cache=True`` decoded samples stay in memory and are shuffled by a
    seeded ``Dataset.shuffle``: reproducible for an uninterrupted run, but a
    resumed run sees another order (exact replay needs ``cache=False``).
    ``depth_zoom``: what a zoom by ``s`` does to depth (``augment.scale_crop``).
    ``in_memory=True`` (without ``cache``): when the decoded samples take at
    most ``IN_MEMORY_LIMIT_MB``, decode them once and gather each epoch's
    from memory; the batches are those of the files, bit for bit.
    """
    seed = int(seed)
    paths = {k: tf.constant(v) for k, v in paths.items()}
    decoded = _decoded_in_memory(paths, decode, num_samples) if in_memory and not cache else None

    def sample_at(k):
        if decoded is not None:
            return tf.nest.map_structure(lambda a: tf.gather(a, k), decoded)
        return decode({n: tf.gather(v, k) for n, v in paths.items()})

    def prepare(epoch, index, sample):
        image, targets = sample
        if scale or flip:
            pair = tf.stack([tf.cast(seed * _SEED_MIX, tf.int64) + epoch, index])
            image, targets = random_augment(image, targets, pair, scale, flip, depth_zoom)
        return image, targets

    if cache:
        decoded = tf.data.Dataset.from_tensor_slices(paths).map(
            _as_written(decode), num_parallel_calls=tf.data.AUTOTUNE).cache()
        ds = decoded.shuffle(num_samples, seed=seed, reshuffle_each_iteration=True).repeat()
        ds = ds.enumerate(start=initial_epoch * num_samples).map(
            _as_written(lambda g, sample: prepare(g // num_samples, g % num_samples, sample)),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        steps = steps_per_epoch or -(-num_samples // batch_size)
        ds = ds.batch(batch_size)
        if epochs is not None:
            ds = ds.take(steps * (epochs - initial_epoch))
        return _options(ds.prefetch(tf.data.AUTOTUNE))

    def permutation(epoch, repeat):
        key = tf.stack([tf.cast(seed * _SEED_MIX, tf.int64) + epoch, repeat])
        order = tf.argsort(tf.random.stateless_uniform([num_samples], key))
        return tf.data.Dataset.from_tensor_slices(order)

    def one_epoch(epoch):
        if steps_per_epoch is None:
            order = permutation(epoch, tf.constant(0, tf.int64))
        else:
            order = tf.data.Dataset.range(tf.int64.max).flat_map(
                _as_written(lambda r: permutation(epoch, r)))
        ds = order.enumerate().map(
            _as_written(lambda i, k: prepare(epoch, i, sample_at(k))),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(batch_size)
        if steps_per_epoch is not None:
            ds = ds.take(steps_per_epoch)
        return ds

    last = tf.int64.max if epochs is None else epochs
    ds = tf.data.Dataset.range(initial_epoch, last).flat_map(_as_written(one_epoch))
    return _options(ds.prefetch(tf.data.AUTOTUNE))


def _decoded_in_memory(paths, decode, num_samples):
    """Every sample decoded, stacked per output (``None`` if over the size limit)."""
    first = decode({n: v[0] for n, v in paths.items()})
    sample_bytes = sum(t.shape.num_elements() * t.dtype.size for t in tf.nest.flatten(first))
    if num_samples * sample_bytes > IN_MEMORY_LIMIT_MB * 2**20:
        return None
    ds = tf.data.Dataset.from_tensor_slices(paths).map(
        _as_written(decode), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return next(iter(ds.batch(num_samples)))


def steps_per_epoch(num_samples, batch_size, steps=None):
    return steps or -(-num_samples // batch_size)
