"""The tf.data input pipeline: shards -> decode -> augment -> batches of uint8 images.

    files (glob, comma-separated patterns, any TF filesystem)
      -> shard by InputContext (files; per record when fewer files than pipelines)
      -> per epoch: stateless file shuffle -> parallel interleave of plain TFRecordDatasets
      -> record shuffle buffer -> enumerate -> parse (decoder + parser) -> batch
      -> MixUp/CutMix, policy -> [tf.data service] -> prefetch

Randomness: a record's crop/flip seed is `[stream key, position in the shuffled stream]`; the
stream key mixes `seed` and the input pipeline id. A `deterministic=True` run fixes the order,
hence the positions, and is reproducible bit-for-bit (also across a checkpointed iterator);
otherwise the order, and so the pairing of seeds and records, varies run to run.

Corrupt data (see guard.py): strict mode adds nothing per record. The map runs under a name
scope that tags failing ops with the pipeline, and `corrupt_data_error(e)` (called by `cli.run`)
re-reads that pipeline's shards after a failure to name the bad shard and record:
`transfer_tf corrupt data: cannot parse/decode record N of shard PATH (reason)`, or `truncated or
corrupt TFRecord framing after record N in shard PATH`. With `data_cfg.skip_corrupt` records
carry their shard and index through a guarded map instead, and each bad one is skipped, logged
and counted (`skipped_records()`); that bookkeeping costs ~10-25% throughput.

Example:
    ds = build_dataset(cfg.data, split="train", global_batch_size=256, seed=cfg.seed)
    images, labels = next(iter(ds))  # uint8 [256, S, S, 3], float32 [256, num_classes]
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os

import tensorflow as tf

from transfer_tf.config import DataConfig, to_dict
from transfer_tf.data import mixing, policies
from transfer_tf.data.decoders import make_decoder
from transfer_tf.data.guard import (  # noqa: F401  (re-exported)
    CORRUPT_PREFIX,
    corrupt_data_error,
    guarded_map,
    read_shard,
    register_pipeline,
    skipped_records,
)
from transfer_tf.data.label_maps import read_label_map
from transfer_tf.data.parsers import Parser
from transfer_tf.errors import UsageError

AUTOTUNE = tf.data.AUTOTUNE
_EPOCHS_FOREVER = 2**62


def list_files(pattern: str) -> list[str]:
    """Sorted files matching comma-separated glob patterns (any TF filesystem).

    Raises:
      UsageError: empty pattern, or a pattern that matches nothing.
    """
    if not pattern.strip():
        raise UsageError("data file pattern is empty (set data.train_pattern / data.eval_pattern)")
    files: set[str] = set()
    for part in (p.strip() for p in pattern.split(",")):
        if not part:
            continue
        matched = tf.io.gfile.glob(part)
        if not matched:
            raise UsageError(f"data file pattern '{part}' matches no files")
        files.update(matched)
    return sorted(files)


def _file_sizes(files: list[str]) -> list[int]:
    # Remote stats are slow one by one; a small pool keeps 1000+ GCS shards to a second or two.
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        return list(pool.map(lambda f: tf.io.gfile.stat(f).length, files))


def _record_seed(seed: int, shard: tf.Tensor, index: tf.Tensor, epoch: tf.Tensor) -> tf.Tensor:
    # Skip mode only: the key follows the record, so the guarded map's chunks may run in any order.
    key = tf.constant([seed, 0x5EED], tf.int64)
    key = tf.random.experimental.stateless_fold_in(key, epoch)
    key = tf.random.experimental.stateless_fold_in(
        key, tf.strings.to_hash_bucket_fast(shard, 2**62)
    )
    return tf.random.experimental.stateless_fold_in(key, index)


def _stream_key(seed: int, pipeline_id: int) -> int:
    """First half of the per-record stateless seed `[key, position in the stream]`: distinct per
    experiment seed and input pipeline (so workers do not draw the same crops)."""
    return (seed * 1_000_003 + pipeline_id * 7_919 + 0x5EED) % (2**63)


def service_job_name(
    data_cfg: DataConfig, split: str, seed: int, batch: int, deterministic: bool, run_id: str = ""
) -> str:
    """The tf.data service job of a dataset: `transfer_tf-SPLIT-DIGEST`.

    Trainers that build the same dataset (data section, seed, per-replica batch, determinism)
    for the same run (`run_id`, e.g. the model_dir every worker of a run is given) share one
    `distributed_epoch` job and so split each epoch's records between them. Anything else gets a
    job of its own: the dispatcher hands a job name to whoever asks with it, whatever dataset
    they registered, so a shared name would feed one experiment another's batches.
    """
    identity = {
        "data": to_dict(data_cfg),
        "split": split,
        "seed": seed,
        "batch": batch,
        "deterministic": deterministic,
        "run": run_id,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"transfer_tf-{split}-{digest[:20]}"


def parallelism(data_cfg: DataConfig) -> int:
    """Parallel calls for the pipeline's maps: `data.num_parallel_calls`, where 0 means one more
    than the schedulable CPU cores and -1 means `tf.data.AUTOTUNE`."""
    if data_cfg.num_parallel_calls != 0:
        return data_cfg.num_parallel_calls
    # The cores this process may run on (a container's share), where the OS says; macOS does not.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (cores or 1) + 1


def _options(deterministic: bool, sharded_by_us: bool, autotune: bool) -> tf.data.Options:
    options = tf.data.Options()
    options.deterministic = deterministic
    # Fixed parallelism (the default) turns autotuning off: it records timings for every element
    # in every stage, which cost ~7% of throughput on a 2-core host.
    options.autotune.enabled = autotune
    # A deterministic run keeps the maps we leave sequential (the keras-cv policy map, whose
    # stateful generators must not be shared by parallel calls) sequential.
    options.experimental_optimization.map_parallelization = not deterministic
    options.experimental_optimization.parallel_batch = True
    # Each decode/resize is one small op: splitting it over intra-op threads costs more in
    # hand-offs than it saves while every core already decodes its own image.
    options.threading.max_intra_op_parallelism = 1
    if sharded_by_us:
        # We already split the input per pipeline; a strategy must not split it again.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


def _tfrecord_source(
    files: list[str],
    *,
    training: bool,
    repeat: bool,
    seed: int,
    file_shuffle: bool,
    cycle_length: int,
    context: tf.distribute.InputContext | None,
    deterministic: bool,
    guarded: bool,
    log_py: bool,
    parallel: int = AUTOTUNE,
) -> tf.data.Dataset:
    """Records of this input pipeline's share of `files`.

    Strict mode: serialized records (plain `TFRecordDataset`s, nothing per record). Skip mode
    (`guarded`): `(shard, index, epoch, record)`, with broken framing skipped and counted.
    """
    n, i = (context.num_input_pipelines, context.input_pipeline_id) if context else (1, 0)
    per_record = n > 1 and len(files) < n
    if n > 1 and not per_record:
        files = files[i::n]
    sizes = _file_sizes(files) if guarded else [0] * len(files)
    num_files = len(files)
    epochs = tf.data.Dataset.range(_EPOCHS_FOREVER if repeat else 1)
    shuffle = training and file_shuffle and not per_record

    def files_of_epoch(epoch):
        order = tf.data.Dataset.range(num_files)
        if shuffle:  # stateless: a fresh, reproducible file order per epoch
            order = order.map(
                lambda k: tf.random.experimental.index_shuffle(
                    k,
                    tf.stack([tf.constant(seed, tf.int64), epoch]),
                    num_files - 1,
                )
            )
        table = (tf.constant(files), tf.constant(sizes, tf.int64))
        return order.map(lambda k: (table[0][k], table[1][k], epoch))

    if guarded:

        def read(f, s, e):
            return read_shard(f, s, e, True, log_py)

    else:

        def read(f, s, e):
            return tf.data.TFRecordDataset(f)

    cycle = max(1, min(cycle_length, num_files))
    records = epochs.flat_map(files_of_epoch).interleave(
        read,
        cycle_length=cycle,
        block_length=1,
        num_parallel_calls=parallel if parallel == AUTOTUNE else min(parallel, cycle),
        # Per-record sharding needs the same record order in every pipeline.
        deterministic=deterministic or per_record or not training,
    )
    if per_record:
        records = records.shard(n, i)
    return records


def build_dataset(
    data_cfg: DataConfig,
    *,
    split: str,
    global_batch_size: int,
    seed: int = 0,
    deterministic: bool = False,
    input_context: tf.distribute.InputContext | None = None,
    repeat: bool | None = None,
    run_id: str = "",
) -> tf.data.Dataset:
    """Builds the train or eval dataset of `(images, labels)` batches.

    Args:
      data_cfg: the data section; `train_pattern`/`eval_pattern` are TFRecord globs or `tfds:NAME`.
      split: `train` (random crops, shuffled, repeated, full batches) or `eval` (center crop, one
        pass in a fixed order, last batch may be short).
      global_batch_size: across all replicas; with `input_context` each pipeline yields its
        per-replica batch and reads its own files.
      seed: the experiment seed (`cfg.seed`); deterministic: fixed order too (tests, debugging).
      repeat: override the split's default (train repeats forever, eval does not).
      run_id: with `data.tf_data_service`, the trainers given the same run_id (and building the
        same dataset) share one service job; see `service_job_name`.
    Returns:
      Dataset of `(images uint8 [B, S, S, 3], labels float32 [B, num_classes])`. Labels are
      one-hot (classification), multi-hot (COCO) or soft (after MixUp/CutMix).
    Raises:
      UsageError: bad split or batch size, patterns that match nothing, a bad label map.
    """
    if split not in ("train", "eval"):
        raise UsageError(f"split must be 'train' or 'eval', got {split!r}")
    training = split == "train"
    repeat = training if repeat is None else repeat
    batch = (
        input_context.get_per_replica_batch_size(global_batch_size)
        if input_context
        else global_batch_size
    )
    if batch <= 0:
        raise UsageError(f"global batch size {global_batch_size} gives an empty per-replica batch")
    pattern = data_cfg.train_pattern if training else data_cfg.eval_pattern
    skip = data_cfg.skip_corrupt
    log_py = not data_cfg.tf_data_service
    deterministic = bool(deterministic)
    parallel = parallelism(data_cfg)
    autotune = parallel == AUTOTUNE
    # Through the tf.data service, trainers consume one shared distributed_epoch job that already
    # hands each record to exactly one consumer; splitting files per trainer first would give the
    # trainers different datasets under one job name.
    source_context = None if training and data_cfg.tf_data_service else input_context

    if pattern.startswith("tfds:"):
        from transfer_tf.data import tfds_source

        source, schema = tfds_source.load(
            data_cfg,
            pattern,
            training=training,
            repeat=repeat,
            seed=seed,
            input_context=source_context,
        )
        if not skip:
            source = source.map(lambda shard, index, epoch, tensors: tensors)
        parser = Parser(data_cfg, training=training, label_offset=0, label_map=None)
        decode, files = None, []
    else:
        files = list_files(pattern)
        source = _tfrecord_source(
            files,
            training=training,
            repeat=repeat,
            seed=seed,
            file_shuffle=data_cfg.file_shuffle,
            cycle_length=data_cfg.cycle_length,
            context=source_context,
            deterministic=deterministic,
            guarded=skip,
            log_py=log_py,
            parallel=parallel,
        )
        schema = data_cfg.schema
        label_map = None
        if schema == "coco":
            if not data_cfg.label_map_file:
                raise UsageError("data.label_map_file is required for the coco schema")
            label_map = read_label_map(data_cfg.label_map_file)
        parser = Parser(
            data_cfg, training=training, label_map=label_map, jpeg_only=data_cfg.jpeg_only
        )
        decode = make_decoder(schema).decode

    mixes = training and (data_cfg.mixup_alpha > 0 or data_cfg.cutmix_alpha > 0)
    if training and data_cfg.shuffle_buffer > 1:
        source = source.shuffle(data_cfg.shuffle_buffer, seed=seed)
    order_fixed = deterministic or not training

    def model_inputs(payload, key):
        image, label = parser(decode(payload) if decode is not None else payload, key)
        # The first record of a batch seeds that batch's MixUp/CutMix.
        return image, label, key + 1 if mixes else tf.zeros([2], tf.int64)

    if skip:

        def process(shard, index, epoch, payload):
            return model_inputs(payload, _record_seed(seed, shard, index, epoch))

        size = data_cfg.image_size
        dummy = (
            tf.zeros([size, size, 3], tf.uint8),
            tf.zeros([data_cfg.num_classes], tf.float32),
            tf.zeros([2], tf.int64),
        )
        ds = guarded_map(source, process, dummy, True, log_py, order_fixed, parallel)
    else:
        # Zero-cost strict mode: a plain map under a name scope that tags any failing op, so
        # `corrupt_data_error` can find and name the bad shard afterwards (see guard.py).
        tag = register_pipeline(
            pattern, files, (lambda r: parser.validate(decode(r))) if decode is not None else None
        )
        pipeline_id = input_context.input_pipeline_id if input_context else 0
        stream = tf.constant(_stream_key(seed, pipeline_id), tf.int64)

        def process(position, payload):
            with tf.name_scope(tag):
                # Seed = (stream key, position in the shuffled stream): one op, and a
                # deterministic run replays the same order, hence the same seeds.
                return model_inputs(payload, tf.stack([stream, position]))

        ds = source.enumerate().map(
            process,
            num_parallel_calls=parallel,
            deterministic=order_fixed,
        )
    ds = ds.batch(
        batch,
        drop_remainder=training,
        num_parallel_calls=parallel,
        deterministic=order_fixed,
    )

    if training and (data_cfg.mixup_alpha > 0 or data_cfg.cutmix_alpha > 0):

        def mix(images, labels, seeds):
            images, labels = mixing.mix_batch(
                images, labels, seeds[0], data_cfg.mixup_alpha, data_cfg.cutmix_alpha
            )
            return images, labels, seeds

        ds = ds.map(mix, num_parallel_calls=parallel, deterministic=deterministic)
    policy = policies.make_policy(data_cfg, seed) if training else None
    if policy is not None:
        # Sequential in a deterministic run (see _options and policies.py).
        ds = ds.map(
            lambda images, labels, seeds: (policy(images), labels, seeds),
            num_parallel_calls=None if deterministic else parallel,
            deterministic=None if deterministic else False,
        )
    ds = ds.map(lambda images, labels, seeds: (images, labels))

    if training and data_cfg.tf_data_service:
        # distributed_epoch: the dispatcher hands each worker whole epochs/shards, so every
        # record is produced once per epoch across all workers (parallel_epochs would have each
        # worker replay the full dataset). One job per run and dataset: all replicas of a run
        # read from the same job, other experiments on the same service from their own.
        ds = ds.apply(
            tf.data.experimental.service.distribute(
                processing_mode="distributed_epoch",
                service=data_cfg.tf_data_service,
                job_name=service_job_name(data_cfg, split, seed, batch, deterministic, run_id),
            )
        )
    default_prefetch = AUTOTUNE if autotune else 2
    ds = ds.prefetch(data_cfg.prefetch if data_cfg.prefetch > 0 else default_prefetch)
    options = _options(deterministic or not training, input_context is not None, autotune)
    return ds.with_options(options)
