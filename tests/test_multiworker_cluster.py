"""Cluster setup and pre-flight checks (no processes started): TF_CONFIG from flags or passed
through, and the one-line errors for clusters and configs that cannot work."""

import json

import pytest

from transfer_tf.config import ConfigError, load_config
from transfer_tf.distribute import cluster, preflight
from transfer_tf.errors import UsageError


def test_flags_build_tf_config_and_chief_is_worker_zero():
    env = {}
    info = cluster.configure_cluster("127.0.0.1:2000,127.0.0.1:2001", 1, environ=env)
    assert json.loads(env["TF_CONFIG"]) == {
        "cluster": {"worker": ["127.0.0.1:2000", "127.0.0.1:2001"]},
        "task": {"type": "worker", "index": 1},
    }
    assert (info.num_workers, info.task_index, info.is_chief) == (2, 1, False)
    assert cluster.configure_cluster("a:1,b:1", 0, environ={}).is_chief
    # Same flags as an existing TF_CONFIG: fine (a launcher may set both consistently).
    assert (
        cluster.configure_cluster("127.0.0.1:2000,127.0.0.1:2001", 1, environ=env).task_index == 1
    )


def test_tf_config_passthrough_with_explicit_chief():
    tf_config = {
        "cluster": {"chief": ["h0:2222"], "worker": ["h1:2222", "[::1]:2223"]},
        "task": {"type": "worker", "index": 0},
    }
    env = {"TF_CONFIG": json.dumps(tf_config)}
    info = cluster.configure_cluster(environ=env)
    assert (info.num_workers, info.is_chief, info.is_multi_worker) == (3, False, True)
    assert json.loads(env["TF_CONFIG"]) == tf_config  # untouched
    env["TF_CONFIG"] = json.dumps({**tf_config, "task": {"type": "chief", "index": 0}})
    assert cluster.configure_cluster(environ=env).is_chief
    single = cluster.configure_cluster(environ={})
    assert (single.num_workers, single.is_chief, single.is_multi_worker) == (1, True, False)


@pytest.mark.parametrize(
    "hosts, index, env, needle",
    [
        ("a:1,b:1", 2, {}, "--task_index: 2 is out of range"),
        ("a:1,b:1", None, {}, "--worker_hosts needs --task_index"),
        ("", 0, {}, "--task_index needs --worker_hosts"),
        ("a:1,nocolon", 0, {}, "'nocolon' is not HOST:PORT"),
        ("a:1,a:1", 0, {}, "'a:1' is listed twice"),
        ("a:70000", 0, {}, "'a:70000' is not HOST:PORT"),
        ("a:1,b:1", 0, {"TF_CONFIG": '{"cluster": {"worker": ["x:1"]}}'}, "they differ"),
        ("", None, {"TF_CONFIG": "{not json"}, "TF_CONFIG: not valid JSON"),
        ("", None, {"TF_CONFIG": '{"cluster": {"ps": ["a:1"]}, "task": {}}'}, "cluster.ps"),
        ("", None, {"TF_CONFIG": '{"cluster": {"worker": "a:1"}}'}, "must be a list"),
        (
            "",
            None,
            {"TF_CONFIG": '{"cluster": {"worker": ["a:1"]}, "task": {"type": "chief"}}'},
            "'task.type' is 'chief'",
        ),
        (
            "",
            None,
            {
                "TF_CONFIG": '{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 3}}'
            },
            "'task.index' 3 is out of range",
        ),
    ],
)
def test_bad_cluster_is_one_line_usage_error(hosts, index, env, needle):
    with pytest.raises(UsageError) as e:
        cluster.configure_cluster(hosts, index, environ=env)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_preflight_tpu_enforces_bfloat16_batch_and_reachable_address():
    tpu = ["train.strategy=tpu", "train.global_batch_size=64"]
    single = cluster.ClusterInfo()
    with pytest.raises(ConfigError, match="train.mixed_precision.*bfloat16"):
        preflight.check_distributed_config(load_config(None, tpu), single)
    # The batch is checked against the strategy's replica count once it exists (cores per host
    # differ by TPU generation): tests/test_tpu.py.
    # A TPU name goes to the cluster resolver unprobed; a grpc:// address must answer.
    named = load_config(None, tpu + ["train.mixed_precision=bfloat16", "train.tpu=my-tpu"])
    preflight.check_distributed_config(named, single)
    with pytest.raises(UsageError, match="no TPU answers at 'grpc://127.0.0.1:1'"):
        preflight.check_tpu_address("grpc://127.0.0.1:1", timeout_s=2)
    with pytest.raises(UsageError, match="--tpu: 'grpc://nohost' is not grpc://HOST:PORT"):
        preflight.check_tpu_address("grpc://nohost")


def test_preflight_multi_worker_needs_mwms_and_divisible_batch():
    two = cluster.ClusterInfo("worker", 0, 2, {"worker": ("a:1", "b:1")})
    with pytest.raises(UsageError, match="2 workers but train.strategy is 'mirrored'"):
        preflight.check_distributed_config(load_config(None, ["train.strategy=mirrored"]), two)
    mwms = ["train.strategy=multi_worker_mirrored"]
    with pytest.raises(ConfigError, match="3 is not divisible by the 2 workers"):
        preflight.check_distributed_config(
            load_config(None, mwms + ["train.global_batch_size=3"]), two
        )
    preflight.check_distributed_config(load_config(None, mwms), two)
    preflight.check_distributed_config(load_config(None, mwms), cluster.ClusterInfo())
