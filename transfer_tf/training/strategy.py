"""Distribution strategies by name, and the chief/worker facts every writer needs.

Example:
    strategy = make_strategy("auto")            # TPU if one is configured, else all GPUs, else one device
    with strategy.scope():
        model = build_classifier(cfg.model, cfg.data.num_classes)
    per_replica = per_replica_batch_size(cfg.train.global_batch_size, strategy)
"""

from __future__ import annotations

import functools
import glob
import inspect
import itertools
import json
import os
import tempfile
from collections.abc import Callable

import tensorflow as tf

from transfer_tf.errors import UsageError

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker_mirrored", "tpu")


# Every MirroredStrategy numbers its collective groups and instances from 1, and the runtime
# caches each (group, instance)'s shape for the life of the process: a second strategy in one
# process (the demo's or a benchmark's runs one after another) reuses the first one's keys for
# other tensors and dies with "Shape mismatch in the collective instance N". TF's own tests give
# each strategy its own group range through this class attribute; so does make_strategy.
_MIRRORED_KEY_BASES = itertools.count(0, 10_000)


def _mirrored_strategy(devices: list[str] | None = None) -> tf.distribute.MirroredStrategy:
    tf.distribute.MirroredStrategy._collective_key_base = next(_MIRRORED_KEY_BASES)
    return tf.distribute.MirroredStrategy(devices)


def _tpu_strategy(tpu: str) -> tf.distribute.Strategy:
    tpu = tpu or os.environ.get("TPU_NAME", "")
    if not tpu and not local_tpu_chips():
        # Without a name the resolver would probe the GCE metadata server and hang off-cloud.
        raise UsageError(
            "--strategy=tpu: no TPU on this machine and no --tpu=NAME_OR_ADDRESS (or TPU_NAME) given"
        )
    from transfer_tf.distribute.preflight import check_tpu_address

    # initialize_tpu_system blocks forever on a grpc:// address where nothing listens.
    check_tpu_address(tpu)
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "local")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError, RuntimeError, OSError) as e:  # OSError: TPU name lookup
        where = f" '{tpu}'" if tpu else ""
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UsageError(f"--strategy=tpu: no TPU{where} could be reached ({first})") from None
    return tf.distribute.TPUStrategy(resolver)


def local_tpu_chips() -> int:
    """TPU devices this host sees: TensorFlow's TPU devices, else the `/dev/accel*` chips a TPU
    VM exposes (v4/v5e/v5p; TensorFlow may list TPU devices only once the system is initialised).
    """
    devices = tf.config.list_physical_devices("TPU")
    return len(devices) if devices else len(glob.glob("/dev/accel[0-9]*"))


def resolve_auto(tpu: str, environ: dict | None = None, tpu_chips: int = 0, gpus: int = 0) -> str:
    """What `strategy: auto` becomes: `tpu` when a TPU is named (`tpu`, TPU_NAME) or this host
    has TPU chips (a TPU VM), else `mirrored` over several GPUs, else `one_device`."""
    env = os.environ if environ is None else environ
    if tpu or env.get("TPU_NAME") or tpu_chips:
        return "tpu"
    return "mirrored" if gpus > 1 else "one_device"


def make_strategy(name: str, tpu: str = "") -> tf.distribute.Strategy:
    """Returns the `tf.distribute.Strategy` called `name`.

    Args:
      name: `auto` (`resolve_auto`: TPU when `tpu` is given, TPU_NAME is set or this host has
        TPU chips, else MirroredStrategy over all GPUs when there are several, else one device), `one_device` (first GPU, else CPU),
        `mirrored` (all local GPUs, or the logical CPUs when there is no GPU), `multi_worker_mirrored`
        (workers from TF_CONFIG), `tpu`.
      tpu: TPU name or grpc address for the cluster resolver.
    Raises:
      UsageError: unknown name, or `tpu` without a reachable TPU.
    """
    if name not in STRATEGIES:
        raise UsageError(f"--strategy: unknown strategy {name!r} (expected {'|'.join(STRATEGIES)})")
    if name == "multi_worker_mirrored":
        # Before anything initialises the runtime (list_logical_devices does): the strategy
        # configures collective ops, which TF only accepts at program startup.
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = resolve_auto(tpu, tpu_chips=local_tpu_chips(), gpus=len(gpus))
        if name == "tpu":
            return _tpu_strategy(tpu)
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        if gpus:
            return _mirrored_strategy()
        return _mirrored_strategy([d.name for d in tf.config.list_logical_devices("CPU")])
    return _tpu_strategy(tpu)


def per_replica_batch_size(global_batch_size: int, strategy: tf.distribute.Strategy) -> int:
    """`global_batch_size / num_replicas`; UsageError when it does not divide evenly.

    The replica count is the strategy's own (a TPU slice's cores over all its hosts: 8 per host
    on v2/v3, 4 on v4/v5p, 1-8 on v5e), never a per-host constant.
    """
    replicas = strategy.num_replicas_in_sync
    if global_batch_size % replicas:
        kind = type(strategy).__name__
        raise UsageError(
            f"config key 'train.global_batch_size': {global_batch_size} is not divisible by the "
            f"{replicas} replicas of the strategy ({kind})"
        )
    return global_batch_size // replicas


def is_chief(strategy: tf.distribute.Strategy | None = None) -> bool:
    """True on the one process that writes checkpoints, summaries and exports.

    Single-process strategies are always chief; under MultiWorkerMirroredStrategy it is the task
    of type `chief`, or worker 0 when the cluster has no chief (TF_CONFIG convention).
    """
    resolver = getattr(strategy, "cluster_resolver", None) if strategy is not None else None
    if resolver is not None and resolver.task_type is not None:
        task_type, task_id = resolver.task_type, resolver.task_id
        has_chief = "chief" in resolver.cluster_spec().as_dict()
    else:
        tf_config = json.loads(os.environ.get("TF_CONFIG", "{}") or "{}")
        task = tf_config.get("task", {})
        task_type, task_id = task.get("type"), task.get("index", 0)
        has_chief = "chief" in tf_config.get("cluster", {})
        if task_type is None:
            return True
    if task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and not has_chief


def worker_dir(base_dir: str, strategy: tf.distribute.Strategy | None = None) -> str:
    """Where this process writes: `base_dir` on the chief, a local per-worker temp dir elsewhere.

    Non-chief workers must still save (the save ops are collective) but to a throwaway place,
    removed by `cleanup_worker_dir` (TF guide: multi_worker_with_custom_training_loop).
    """
    if is_chief(strategy):
        return base_dir
    resolver = getattr(strategy, "cluster_resolver", None)
    task_id = resolver.task_id if resolver is not None and resolver.task_id is not None else 0
    name = os.path.basename(base_dir.rstrip("/")) or "run"
    return os.path.join(tempfile.gettempdir(), f"transfer_tf_{name}_worker{task_id}_{os.getpid()}")


def cleanup_worker_dir(base_dir: str, strategy: tf.distribute.Strategy | None = None) -> None:
    """Deletes this worker's throwaway directory (no-op on the chief)."""
    if not is_chief(strategy):
        path = worker_dir(base_dir, strategy)
        if tf.io.gfile.exists(path):
            tf.io.gfile.rmtree(path)


def train_iterator(
    strategy: tf.distribute.Strategy,
    dataset_fn: Callable,
    *,
    start_step: int = 0,
    checkpointable: bool = False,
):
    """An iterator over `dataset_fn`'s per-replica batches under `strategy`.

    `dataset_fn(ctx, start_step=...)` gets `start_step` when it takes that keyword (the stream then
    starts there). `checkpointable` returns a plain tf.data iterator, which `tf.train.Checkpoint`
    can track (tf.distribute's DistributedIterator cannot); it needs a single replica.

    Raises:
      UsageError: `checkpointable` under a strategy with more than one replica.
    """
    if _takes_start_step(dataset_fn):
        dataset_fn = functools.partial(dataset_fn, start_step=start_step)
    if not checkpointable:
        return iter(strategy.distribute_datasets_from_function(dataset_fn))
    if strategy.num_replicas_in_sync != 1:
        raise UsageError(
            "train.checkpoint_input needs a single replica (tf.distribute iterators cannot be "
            f"checkpointed); this strategy has {strategy.num_replicas_in_sync}"
        )
    # strategy.run accepts a plain iterator's tensors when there is one replica.
    with tf.device(strategy.extended.worker_devices[0]):
        return iter(dataset_fn(tf.distribute.InputContext(1, 0, 1)))


def _takes_start_step(dataset_fn: Callable) -> bool:
    try:
        parameters = inspect.signature(dataset_fn).parameters
    except (TypeError, ValueError):  # builtins and C callables
        return False
    return "start_step" in parameters
