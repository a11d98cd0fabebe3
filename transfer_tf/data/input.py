"""The tf.data input pipeline: shards -> decode -> augment -> batches of uint8 images.

    files (glob, comma-separated patterns, any TF filesystem)
      -> shard by InputContext (files; per record when fewer files than pipelines)
      -> per epoch: stateless file shuffle -> parallel interleave of plain TFRecordDatasets
         -> record shuffle buffer seeded by (seed, epoch)
      -> epochs from the start position on -> enumerate (position) -> parse (decoder + parser)
      -> policy (RandAugment/AutoAugment, per image) -> batch -> MixUp/CutMix
      -> [tf.data service] -> prefetch

One input stream per run: the train stream is a function of the global step. `start_step` (the
Trainer passes its global step whenever it builds an iterator: each phase, each resume) puts the
pipeline at record `start_step * global_batch_size / num_input_pipelines` of its stream, i.e. at
epoch `position // epoch_size` and that many records into it; the epoch's length comes from the
builders' manifest (record counts per shard) or, for shards without one, from one counting pass
over this pipeline's files. Phases therefore continue the stream, and a resumed run continues
where its checkpoint left off without `train.checkpoint_input` (which also saves the shuffle
buffer and prefetched elements: the same records, restored instead of re-read).

Randomness: a record's crop/flip seed is `[stream key, position in the stream]` in both strict and
skip mode; the stream key mixes `seed` and the input pipeline id. Guarantees:
* `deterministic=True`: the order is fixed, so a stream started at step k yields exactly what an
  uninterrupted stream yields from step k on (records, crops, flips, MixUp/CutMix), and turning
  `data.on_corrupt_record: skip` on changes nothing on clean data.
* otherwise (parallel interleave/maps out of order): epochs, file order and the position counter
  are exact, so a resumed stream is in the right epoch with the right number of its records
  already consumed and never replays epoch 0; which records sit near the cut (within the
  interleave's cycle and the shuffle buffer) and the pairing of seeds and records vary run to run.
Resuming mid-epoch reads (without decoding) the records of that epoch before the cut.

Corrupt data (`data.on_corrupt_record`): `error` (guard.py) adds nothing per record. The map runs
under a name scope that tags failing ops with the pipeline, and `corrupt_data_error(e)` (called
by `cli.run`) re-reads that pipeline's shards after a failure to name the bad shard, record and
byte offset: `transfer_tf corrupt data: cannot parse/decode record N of shard PATH (byte offset
B; reason)`, or `truncated or corrupt TFRecord framing at record N of shard PATH (byte offset B
of SIZE; ...)`. With `skip` (skipping.py) records carry their shard and index through a guarded
map instead; each bad one (a broken shard: its unreadable rest) is skipped, logged and counted
(`skipped_records()`), and each input epoch's end logs how many records every shard lost; that
bookkeeping costs ~10-25% throughput.

Remote patterns (`gs://`, `s3://`, any `scheme://` but `file://`): 8 MiB TFRecord read buffers (the
TPU reference input's) and, unless `data.num_parallel_calls` is set, tf.data AUTOTUNE parallelism.

Before any record is read the config is checked against the manifest the builders wrote beside
the shards (data/manifest.py).

Example:
    ds = build_dataset(cfg.data, split="train", global_batch_size=256, seed=cfg.seed)
    images, labels = next(iter(ds))  # uint8 [256, S, S, 3], float32 [256, num_classes]
"""

from __future__ import annotations

import hashlib
import json
import os

import tensorflow as tf

from transfer_tf.config import DataConfig, to_dict
from transfer_tf.data import manifest, mixing, policies
from transfer_tf.data.files import list_files
from transfer_tf.data.guard import (  # noqa: F401  (re-exported)
    CORRUPT_PREFIX,
    corrupt_data_error,
    register_pipeline,
)
from transfer_tf.data.label_maps import read_label_map
from transfer_tf.data.parsers import Parser, ViewsFn
from transfer_tf.data.skipping import (  # noqa: F401  (skipped_records: re-exported)
    guarded_map,
    new_ledger,
    size_ledger,
    skipped_records,
)
from transfer_tf.data.stream import as_written, epoch_stream, tfrecord_epochs
from transfer_tf.data.task_parsers import TaskConfig, record_parser, task_name
from transfer_tf.errors import UsageError

AUTOTUNE = tf.data.AUTOTUNE
# Read buffer per open remote shard: the TPU reference ImageNet input's 8 MiB. TensorFlow's
# default (256 KiB) would cost one request to the object store every two or three images.
REMOTE_READ_BUFFER = 8 << 20


def _stream_key(seed: int, pipeline_id: int) -> int:
    """First half of the per-record stateless seed `[key, position in the stream]`: distinct per
    experiment seed and input pipeline (so workers do not draw the same crops)."""
    return (seed * 1_000_003 + pipeline_id * 7_919 + 0x5EED) % (2**63)


def service_job_name(
    data_cfg: DataConfig,
    split: str,
    seed: int,
    batch: int,
    deterministic: bool,
    run_id: str = "",
    start_step: int = 0,
) -> str:
    """The tf.data service job of a dataset: `transfer_tf-SPLIT-DIGEST`.

    Trainers that build the same dataset (data section, seed, per-replica batch, determinism)
    for the same run (`run_id`, e.g. the model_dir every worker of a run is given) from the same
    stream position (`start_step`: a later phase or a resume gets a job of its own) share one
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
        "start_step": start_step,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"transfer_tf-{split}-{digest[:20]}"


def is_remote(pattern: str) -> bool:
    """True when a pattern names a non-local filesystem (`gs://`, `s3://`, ...; not `file://`)."""
    parts = [p.strip() for p in pattern.split(",") if p.strip()]
    return any("://" in p and not p.startswith("file://") for p in parts)


def parallelism(data_cfg: DataConfig, pattern: str | None = None) -> int:
    """Parallel calls for the pipeline's maps: `data.num_parallel_calls`, where 0 means one more
    than the schedulable CPU cores, or `tf.data.AUTOTUNE` for a remote `pattern` (default: the
    train pattern), and -1 means AUTOTUNE."""
    if data_cfg.num_parallel_calls != 0:
        return data_cfg.num_parallel_calls
    # Remote reads wait on the network, not the CPU: a count tuned to the cores would under-feed
    # a big host, so let tf.data's autotuner size the parallelism.
    if is_remote(data_cfg.train_pattern if pattern is None else pattern):
        return AUTOTUNE
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
    # Each epoch's shuffle draws from a fixed seed through a stateless "dummy" seed generator,
    # which tf.data counts as external state; there is nothing in it to save, so a checkpointed
    # iterator (train.checkpoint_input) must not refuse to serialize it.
    options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.IGNORE
    if sharded_by_us:
        # We already split the input per pipeline; a strategy must not split it again.
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return options


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
    start_step: int = 0,
    views: ViewsFn | None = None,
    detection: TaskConfig | None = None,
) -> tf.data.Dataset:
    """Builds the train or eval dataset of `(images, labels)` batches.

    Args:
      data_cfg: the data section; `train_pattern`/`eval_pattern` are TFRecord globs or `tfds:NAME`.
        It is checked against the builders' manifest first (`num_classes: auto` is filled in).
      split: `train` (random crops, shuffled, repeated, full batches) or `eval` (center crop, one
        pass in a fixed order, last batch may be short).
      global_batch_size: across all replicas; with `input_context` each pipeline yields its
        per-replica batch and reads its own files.
      seed: the experiment seed (`cfg.seed`); deterministic: fixed order too (tests, debugging).
      repeat: override the split's default (train repeats forever, eval does not).
      run_id: with `data.tf_data_service`, the trainers given the same run_id (and building the
        same dataset) share one service job; see `service_job_name`.
      start_step: train only: the global step the consumer is at; the stream starts where a
        stream started at step 0 would be after `start_step` steps (see module doc).
      views: two-view mode (self-supervised pretraining; `parsers.ViewsFn`): batches are
        `((views1, views2) uint8 [B, S, S, 3] each, labels float32 [B, 0])`, labels ignored.
      detection: the section of a dense task (`transfer.task` detection or segmentation): its
        parser (`data.detection`, `data.segmentation`) reads the shards (own size and targets).
    Returns:
      Dataset of `(images uint8 [B, S, S, 3], labels float32 [B, num_classes])`. Labels are
      one-hot (classification), multi-hot (COCO) or soft (after MixUp/CutMix). Detection: labels
      are the parser's targets, batched (`data/detection.py`, `data/segmentation.py`).
    Raises:
      UsageError: bad split or batch size, patterns that match nothing, a bad label map.
      ConfigError: the config disagrees with the builders' manifest (data/manifest.py).
    """
    if split not in ("train", "eval"):
        raise UsageError(f"split must be 'train' or 'eval', got {split!r}")
    if start_step < 0:
        raise UsageError(f"start_step must be >= 0, got {start_step}")
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
    skip = data_cfg.on_corrupt_record == "skip"
    log_py = not data_cfg.tf_data_service
    # Skip mode's per-epoch counts of skipped records (Python hooks: not on tf.data service).
    ledger = new_ledger(pattern) if skip and log_py else -1
    deterministic = bool(deterministic)
    parallel = parallelism(data_cfg, pattern)
    autotune = parallel == AUTOTUNE
    # Through the tf.data service, trainers consume one shared distributed_epoch job that already
    # hands each record to exactly one consumer; splitting files per trainer first would give the
    # trainers different datasets under one job name.
    source_context = None if training and data_cfg.tf_data_service else input_context

    if pattern.startswith("tfds:"):
        if detection is not None:
            raise UsageError(
                f"'{pattern}': a {task_name(detection)} run reads TFRecord shards, not TFDS"
            )
        from transfer_tf.data import tfds_source

        data_cfg = manifest.check_pattern(data_cfg, pattern, None)
        source = tfds_source.load(
            data_cfg, pattern, training=training, seed=seed, input_context=source_context
        )
        records, epoch_size, schema = source.records, source.epoch_size, source.schema
        if not skip:
            tfds_records = records

            def records(epoch):
                return tfds_records(epoch).map(as_written(lambda shard, index, e, tensors: tensors))

        parser = Parser(data_cfg, training=training, label_offset=0, label_map=None, views=views)
        decode, files = None, []
    else:
        files = list_files(pattern)
        data_cfg = manifest.check_pattern(data_cfg, pattern, files)
        records, epoch_size = tfrecord_epochs(
            files,
            training=training,
            seed=seed,
            file_shuffle=data_cfg.file_shuffle,
            cycle_length=data_cfg.cycle_length,
            context=source_context,
            deterministic=deterministic,
            guarded=skip,
            log_py=log_py,
            parallel=parallel,
            read_buffer=REMOTE_READ_BUFFER if is_remote(pattern) else None,
            ledger=ledger,
        )
        schema = data_cfg.schema
        label_map = None
        if schema == "coco" and views is None and getattr(detection, "layout", "") != "semantic":
            if not data_cfg.label_map_file:
                raise UsageError("data.label_map_file is required for the coco schema")
            label_map = read_label_map(data_cfg.label_map_file)
        parser, decode = record_parser(data_cfg, detection, training, label_map, views)

    # Records this pipeline consumes per global step: each pipeline feeds its replicas' batches.
    pipelines = source_context.num_input_pipelines if source_context else 1
    start = start_step * global_batch_size // pipelines if training else 0
    if ledger >= 0:  # per-epoch summaries need it (manifest: free; else a counting pass)
        size_ledger(ledger, epoch_size(), start)
    source = epoch_stream(
        records,
        epoch_size,
        start=start,
        repeat=repeat,
        shuffle_buffer=data_cfg.shuffle_buffer if training else 0,
        seed=seed,
        pattern=pattern,
    )
    mixes = training and (data_cfg.mixup_alpha > 0 or data_cfg.cutmix_alpha > 0)
    order_fixed = deterministic or not training
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    stream = tf.constant(_stream_key(seed, pipeline_id), tf.int64)

    # Traced as written, not through AutoGraph: decoders, parsers, crops and views use tf.cond
    # and tf.while_loop themselves, and converting their source took ~4.6 s of a new process's
    # first pipeline (a 16 px SimCLR run: 6.7 s of AutoGraph before, 2.1 s after).
    @as_written
    def model_inputs(payload, position):
        # Seed = (stream key, position in the stream): one op; a deterministic run replays the
        # same order, hence the same seeds, and a corrupt record skipped in skip mode shifts
        # no other record's seed.
        key = tf.stack([stream, position])
        image, label = parser(decode(payload) if decode is not None else payload, key)
        # The first record of a batch seeds that batch's MixUp/CutMix.
        return image, label, key + 1 if mixes else tf.zeros([2], tf.int64)

    if skip:

        @as_written
        def process(shard, index, epoch, payload):
            position, record = payload
            return model_inputs(record, position)

        size = data_cfg.image_size
        image = tf.zeros([size, size, 3], tf.uint8)
        dummy = (
            (image, image) if views is not None else image,
            tf.zeros([0 if views is not None else data_cfg.num_classes], tf.float32),
            tf.zeros([2], tf.int64),
        )
        if detection is not None:
            dummy = (*parser.dummy(), dummy[2])
        # The position rides with the payload: guarded_map passes it through to `process`.
        positioned = source.map(
            as_written(lambda position, r: (r[1][0], r[1][1], r[1][2], (position, r[1][3])))
        )
        ds = guarded_map(positioned, process, dummy, log_py, order_fixed, parallel, ledger)
    else:
        # Zero-cost strict mode: a plain map under a name scope that tags any failing op, so
        # `corrupt_data_error` can find and name the bad shard afterwards (see guard.py).
        tag = register_pipeline(
            pattern, files, (lambda r: parser.validate(decode(r))) if decode is not None else None
        )

        @as_written
        def process(position, indexed):
            with tf.name_scope(tag):
                return model_inputs(indexed[1], position)  # indexed: (index in epoch, payload)

        ds = source.map(process, num_parallel_calls=parallel, deterministic=order_fixed)

    policy = policies.make_policy(data_cfg, seed) if training else None
    if policy is not None:
        # Per image, before batching and mixing (the order of Model Garden, timm, big_vision):
        # geometric ops must not move a CutMix patch away from its area-weighted label, nor
        # colour ops work on blended pixels. Sequential in a deterministic run (see _options
        # and policies.py).
        ds = ds.map(
            # Converted by AutoGraph: keras-cv's policy layers (e.g. Equalization) branch in Python
            # on tensors.
            lambda image, label, key: (policy(image), label, key),
            num_parallel_calls=None if deterministic else parallel,
            deterministic=None if deterministic else False,
        )
    ds = ds.batch(
        batch,
        drop_remainder=training,
        num_parallel_calls=parallel,
        deterministic=order_fixed,
    )

    if mixes:

        @as_written
        def mix(images, labels, seeds):
            images, labels = mixing.mix_batch(
                images, labels, seeds[0], data_cfg.mixup_alpha, data_cfg.cutmix_alpha
            )
            return images, labels

        ds = ds.map(mix, num_parallel_calls=parallel, deterministic=deterministic)
    else:
        ds = ds.map(as_written(lambda images, labels, seeds: (images, labels)))

    if training and data_cfg.tf_data_service:
        # distributed_epoch: the dispatcher hands each worker whole epochs/shards, so every
        # record is produced once per epoch across all workers (parallel_epochs would have each
        # worker replay the full dataset). One job per run, dataset and stream position: all
        # replicas of a run read from the same job, a later phase or other experiments from their own.
        ds = ds.apply(
            tf.data.experimental.service.distribute(
                processing_mode="distributed_epoch",
                service=data_cfg.tf_data_service,
                job_name=service_job_name(
                    data_cfg, split, seed, batch, deterministic, run_id, start_step
                ),
            )
        )
    default_prefetch = AUTOTUNE if autotune else 2
    ds = ds.prefetch(data_cfg.prefetch if data_cfg.prefetch > 0 else default_prefetch)
    options = _options(deterministic or not training, input_context is not None, autotune)
    return ds.with_options(options)
