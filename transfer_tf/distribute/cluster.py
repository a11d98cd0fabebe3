"""Multi-worker cluster setup: `TF_CONFIG` from flags (or passed through), checked up front.

`tf.distribute.MultiWorkerMirroredStrategy` reads the cluster from the `TF_CONFIG` environment
variable when it is constructed. Users either export `TF_CONFIG` themselves (what Kubernetes /
Vertex / Slurm launchers do) or pass `--worker_hosts=h0:p,h1:p --task_index=i` and this module
builds the same JSON. Either way it is parsed here first, so a malformed cluster is a one-line
`UsageError` instead of a gRPC traceback minutes into the job.

Chief detection and per-worker throwaway directories live with the training loop
(`transfer_tf.training.strategy.is_chief` / `worker_dir`); this module only describes the cluster.

Example:
    info = configure_cluster("10.0.0.1:2222,10.0.0.2:2222", task_index=1)  # sets TF_CONFIG
    info.num_workers, info.is_chief  # -> 2, False
    strategy = tf.distribute.MultiWorkerMirroredStrategy()  # reads the TF_CONFIG set above
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Mapping, MutableMapping

from absl import flags

from transfer_tf.errors import UsageError

TF_CONFIG = "TF_CONFIG"
# Task types a MultiWorkerMirroredStrategy cluster may contain (`evaluator` runs outside it).
_TASK_TYPES = ("chief", "worker", "evaluator")
_HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.\-]+):(\d{1,5})$")


@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    """What this process is in the cluster (a single process is worker 0 of 1, and chief)."""

    task_type: str = "worker"
    task_index: int = 0
    # Processes taking part in the collective all-reduce: chief + workers.
    num_workers: int = 1
    cluster: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)

    @property
    def is_chief(self) -> bool:
        """The chief writes checkpoints/summaries/exports: task `chief`, else worker 0."""
        if self.task_type == "chief":
            return True
        return self.task_type == "worker" and self.task_index == 0 and "chief" not in self.cluster

    @property
    def is_multi_worker(self) -> bool:
        return self.num_workers > 1


def parse_hosts(worker_hosts: str, flag: str = "--worker_hosts") -> list[str]:
    """Splits `host:port,host:port` and checks each entry (UsageError naming `flag`).

    Hosts may be names, IPv4 addresses or bracketed IPv6 (`[::1]:2222`); ports 1..65535;
    no duplicates (two tasks cannot listen on one address).
    """
    hosts = [h.strip() for h in worker_hosts.split(",") if h.strip()]
    if not hosts:
        raise UsageError(
            f"{flag}: expected a comma-separated list of HOST:PORT, got {worker_hosts!r}"
        )
    for host in hosts:
        match = _HOST_PORT.match(host)
        if not match or not 0 < int(match.group(2)) < 65536:
            raise UsageError(f"{flag}: {host!r} is not HOST:PORT (e.g. 10.0.0.1:2222)")
    duplicates = sorted({h for h in hosts if hosts.count(h) > 1})
    if duplicates:
        raise UsageError(
            f"{flag}: {duplicates[0]!r} is listed twice (each task needs its own port)"
        )
    return hosts


def tf_config_from_hosts(worker_hosts: str, task_index: int) -> dict:
    """The `TF_CONFIG` dict for worker `task_index` of the cluster `worker_hosts` (worker 0 = chief).

    Example:
        tf_config_from_hosts("a:2222,b:2222", 1)
        # -> {"cluster": {"worker": ["a:2222", "b:2222"]}, "task": {"type": "worker", "index": 1}}
    """
    hosts = parse_hosts(worker_hosts)
    if not 0 <= task_index < len(hosts):
        raise UsageError(
            f"--task_index: {task_index} is out of range for {len(hosts)} --worker_hosts "
            f"(expected 0..{len(hosts) - 1})"
        )
    return {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": task_index}}


def parse_tf_config(text: str) -> ClusterInfo:
    """Checks a `TF_CONFIG` JSON string and returns the ClusterInfo it describes.

    Raises:
      UsageError: not JSON, no `cluster`/`task`, unknown task type, index out of range, or a
        malformed address. The message names TF_CONFIG and the offending key.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{TF_CONFIG}: not valid JSON ({e.msg} at char {e.pos})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{TF_CONFIG}: expected a JSON object with 'cluster' and 'task'")
    cluster = data.get("cluster") or {}
    task = data.get("task") or {}
    if not isinstance(cluster, dict) or not isinstance(task, dict):
        raise UsageError(f"{TF_CONFIG}: 'cluster' and 'task' must be JSON objects")
    if not cluster:
        # TF treats a TF_CONFIG without a cluster as a single local process.
        return ClusterInfo()
    parsed: dict[str, tuple[str, ...]] = {}
    for task_type, hosts in cluster.items():
        if task_type not in _TASK_TYPES and task_type != "ps":
            raise UsageError(
                f"{TF_CONFIG}: unknown task type 'cluster.{task_type}' "
                f"(expected {', '.join(_TASK_TYPES)})"
            )
        if task_type == "ps":
            raise UsageError(
                f"{TF_CONFIG}: 'cluster.ps' is ParameterServerStrategy; this project trains with "
                "MultiWorkerMirroredStrategy (chief/worker tasks only)"
            )
        if isinstance(hosts, str) or not isinstance(hosts, list):
            raise UsageError(f"{TF_CONFIG}: 'cluster.{task_type}' must be a list of HOST:PORT")
        parsed[task_type] = tuple(parse_hosts(",".join(hosts), f"{TF_CONFIG} cluster.{task_type}"))
    task_type = task.get("type")
    index = task.get("index", 0)
    if task_type not in parsed:
        raise UsageError(
            f"{TF_CONFIG}: 'task.type' is {task_type!r}, not one of the cluster's task types "
            f"({', '.join(parsed)})"
        )
    if (
        not isinstance(index, int)
        or isinstance(index, bool)
        or not 0 <= index < len(parsed[task_type])
    ):
        raise UsageError(
            f"{TF_CONFIG}: 'task.index' {index!r} is out of range for "
            f"{len(parsed[task_type])} {task_type} task(s)"
        )
    if "chief" in parsed and len(parsed["chief"]) != 1:
        raise UsageError(f"{TF_CONFIG}: 'cluster.chief' must hold exactly one address")
    num_workers = len(parsed.get("chief", ())) + len(parsed.get("worker", ()))
    return ClusterInfo(task_type, index, num_workers, parsed)


def configure_cluster(
    worker_hosts: str = "",
    task_index: int | None = None,
    environ: MutableMapping[str, str] | None = None,
) -> ClusterInfo:
    """Sets up `TF_CONFIG` for this process and returns what it says. Call before making the strategy.

    Args:
      worker_hosts: `host:port,...` of every worker in order (worker 0 is the chief). Empty =
        use `TF_CONFIG` as it is (or a single process when it is unset).
      task_index: this process's position in `worker_hosts` (required with it).
      environ: the environment to read/write (default `os.environ`; tests pass a dict).
    Raises:
      UsageError: bad flags, a malformed TF_CONFIG, or flags that contradict an existing TF_CONFIG.
    """
    env = os.environ if environ is None else environ
    existing = env.get(TF_CONFIG, "")
    if not worker_hosts:
        if task_index is not None:
            raise UsageError("--task_index needs --worker_hosts (or set TF_CONFIG instead)")
        return parse_tf_config(existing) if existing.strip() else ClusterInfo()
    if task_index is None:
        raise UsageError("--worker_hosts needs --task_index (this process's position in the list)")
    built = tf_config_from_hosts(worker_hosts, task_index)
    if existing.strip():
        # Silently preferring one source would let two processes disagree about the cluster.
        current = json.loads(existing) if _is_json(existing) else None
        if current != built:
            raise UsageError(
                f"both {TF_CONFIG} and --worker_hosts/--task_index are set and they differ; "
                "use one of them"
            )
    env[TF_CONFIG] = json.dumps(built)
    return parse_tf_config(env[TF_CONFIG])


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def define_cluster_flags(flag_values: flags.FlagValues = flags.FLAGS) -> None:
    """Defines `--worker_hosts` and `--task_index` on `flag_values` (for the training binaries)."""
    flags.DEFINE_string(
        "worker_hosts",
        "",
        "Multi-worker training: comma-separated HOST:PORT of every worker, the same list and order "
        "on all of them (worker 0 is the chief). Builds TF_CONFIG; leave empty to use TF_CONFIG.",
        flag_values=flag_values,
    )
    flags.DEFINE_integer(
        "task_index",
        None,
        "With --worker_hosts: this process's position in the list (0-based).",
        flag_values=flag_values,
    )


def configure_cluster_from_flags(flag_values: flags.FlagValues = flags.FLAGS) -> ClusterInfo:
    """`configure_cluster` with the values of `--worker_hosts` / `--task_index`."""
    return configure_cluster(flag_values.worker_hosts, flag_values.task_index)


def weights_digest(model) -> str:
    """SHA-256 of every weight of a Keras model, in `model.weights` order (hex string).

    Replicas of a synchronous strategy must end with equal digests on every worker; the training
    jobs log it at the end so a cluster run can be checked for drift without reading checkpoints.
    """
    import hashlib

    import numpy as np

    digest = hashlib.sha256()
    for variable in model.weights:
        value = np.ascontiguousarray(np.asarray(variable))
        digest.update(f"{variable.path}:{value.dtype}:{value.shape};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()
