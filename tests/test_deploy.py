"""deploy/ and the Dockerfile (issue 33 items 1-2): every job spec loads, has the shape its
platform expects and two edit points (bucket, image/TPU), and every command it holds goes
through the binary's own flag parsing and config resolution (`--dry_run`: config, strategy plan,
step plan; nothing trained). The commands run in ONE child process (one TensorFlow import), each
with the environment its platform gives it (Vertex AI's TF_CONFIG, GKE's JOB_COMPLETION_INDEX).
The Dockerfile cannot be built here (no base images): every path and module it names exists."""

from __future__ import annotations

import ast
import glob
import json
import os
import re
import shlex
import subprocess
import sys

import pytest
import yaml

from transfer_tf.cloud_env import expand_references

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEPLOY = os.path.join(REPO, "deploy")
BUCKET = "gs://YOUR_BUCKET"
VERTEX = sorted(glob.glob(os.path.join(DEPLOY, "vertex", "*.yaml")))
GKE = sorted(glob.glob(os.path.join(DEPLOY, "gke", "*.yaml")))
TPU_VM = os.path.join(DEPLOY, "tpu_vm", "train.sh")
JOBS = ("pretrain", "finetune")

# Runs each case's binary with `--dry_run` under the case's environment; prints JSON results.
_CHILD = r"""
import contextlib, importlib, io, json, os, sys, traceback
from absl import app
from absl.testing import flagsaver
app.define_help_flags()
base = dict(os.environ)
results = []
for case in json.loads(sys.argv[1]):
    os.environ.clear(); os.environ.update(base); os.environ.update(case["env"])
    module = importlib.import_module("pipelines." + case["job"])
    saved = flagsaver.save_flag_values(module.FLAGS)
    out, err, code = io.StringIO(), io.StringIO(), 0
    try:
        with flagsaver.flagsaver(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            if case["launcher"]:  # the container's entry point: python -m pipelines JOB ...
                from pipelines.__main__ import main
                main(["pipelines", case["job"], *case["args"]])
            else:
                sys.argv = ["pipelines." + case["job"], *case["args"]]
                module.run()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
        err.write(traceback.format_exc()); code = 1
    finally:
        flagsaver.restore_flag_values(saved, module.FLAGS)
    results.append({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()})
print("RESULTS " + json.dumps(results))
"""


def _load(path: str) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def _edit_points(path: str) -> list[str]:
    text = open(path).read()
    assert text.count(BUCKET) == 1, f"{path}: the bucket must be written once"
    return [line.strip() for line in text.splitlines() if "# EDIT" in line]


def _vertex_tf_config(pools: list[dict]) -> dict:
    """TF_CONFIG as Vertex AI builds it: pool 0 is the chief, pool 1 the workers."""
    if len(pools) == 1 and pools[0]["replicaCount"] == 1:
        return {}
    cluster = {"chief": ["workerpool0-0:2222"]}
    cluster["worker"] = [f"workerpool1-{i}:2222" for i in range(pools[1]["replicaCount"])]
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}})}


def _case(args: list[str], env: dict, source: str, launcher: bool = False) -> dict:
    expanded = [expand_references(a, env) for a in args]
    return {
        "job": expanded[0],
        "args": [*expanded[1:], "--dry_run"],
        "env": env,
        "launcher": launcher,
        "source": source,
        "spec_args": expanded[1:],
    }


def _vertex_cases() -> list[dict]:
    cases = []
    for path in VERTEX:
        spec = _load(path)
        assert set(spec) <= {"workerPoolSpecs", "scheduling", "baseOutputDirectory"}, path
        pools = spec["workerPoolSpecs"]
        assert isinstance(pools, list) and 1 <= len(pools) <= 4, path
        assert pools[0]["replicaCount"] == 1, f"{path}: pool 0 is the chief"
        images = {p["containerSpec"]["imageUri"] for p in pools}
        assert len(images) == 1, f"{path}: every pool runs the same image"
        accelerator = pools[0]["machineSpec"]["acceleratorType"]
        if "_tpu" in path:
            assert pools[0]["machineSpec"]["machineType"] == "cloud-tpu"
            assert accelerator.startswith("TPU_") and len(pools) == 1
        else:
            assert accelerator.startswith("NVIDIA_") and len(pools) == 2, path
            assert spec["scheduling"]["restartJobOnWorkerRestart"] is True
        for pool in pools:
            machine = pool["machineSpec"]
            assert isinstance(machine["machineType"], str) and machine["acceleratorCount"] >= 1
            assert isinstance(pool["replicaCount"], int) and pool["replicaCount"] >= 1
            container = pool["containerSpec"]
            assert set(container) == {"imageUri", "env", "args"}, path
            assert all(set(e) == {"name", "value"} for e in container["env"])
            assert all(isinstance(a, str) for a in container["args"])
        edits = _edit_points(path)
        assert len(edits) == 2 and "imageUri" in edits[0] and BUCKET in edits[1], edits
        env = {e["name"]: e["value"] for e in pools[0]["containerSpec"]["env"]}
        env.update(_vertex_tf_config(pools))
        args = pools[0]["containerSpec"]["args"]
        assert args[0] in JOBS and os.path.basename(path).startswith(args[0]), path
        cases.append(_case(args, env, path))
    return cases


def _gke_cases() -> list[dict]:
    cases = []
    for path in GKE:
        spec = _load(path)
        assert (spec["apiVersion"], spec["kind"]) == ("jobset.x-k8s.io/v1alpha2", "JobSet")
        name = spec["metadata"]["name"]
        rules = spec["spec"]["failurePolicy"]["rules"]
        assert rules == [{"action": "FailJobSet", "onJobFailureReasons": ["PodFailurePolicy"]}]
        (rjob,) = spec["spec"]["replicatedJobs"]
        job = rjob["template"]["spec"]
        assert job["completionMode"] == "Indexed" and job["parallelism"] == job["completions"]
        (rule,) = job["podFailurePolicy"]["rules"]
        assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [2]
        pod = job["template"]["spec"]
        assert pod["restartPolicy"] == "Never" and pod["terminationGracePeriodSeconds"] >= 60
        (container,) = pod["containers"]
        assert container["name"] == rule["onExitCodes"]["containerName"]
        assert container["resources"]["limits"]["nvidia.com/gpu"] >= 1
        hosts = [a for a in container["args"] if a.startswith("--worker_hosts=")][0]
        # JobSet's stable pod hostnames: <jobset>-<replicatedJob>-<job index>-<pod index>.<jobset>
        want = [f"{name}-{rjob['name']}-0-{i}.{name}:2222" for i in range(job["completions"])]
        assert hosts.split("=", 1)[1].split(",") == want
        edits = _edit_points(path)
        assert len(edits) == 2 and "image:" in edits[0] and BUCKET in edits[1], edits
        env = {e["name"]: e["value"] for e in container["env"]}
        last = str(job["completions"] - 1)  # the Job controller sets it per pod
        cases.append(_case(container["args"], {**env, "JOB_COMPLETION_INDEX": last}, path))
    return cases


def _tpu_vm_cases() -> list[dict]:
    edits = _edit_points(TPU_VM)
    assert len(edits) == 2 and "TPU_NAME=" in edits[0] and BUCKET in edits[1], edits
    cases = []
    for job in JOBS:
        for pod in ("", "1"):
            env = dict(os.environ, DRY_RUN="1", POD=pod, ZONE="us-central2-b")
            done = subprocess.run(
                ["bash", TPU_VM, job], env=env, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, done.stderr
            lines = [shlex.split(line) for line in done.stdout.splitlines()]
            assert [w[:5] for w in lines[1:]] == [
                ["gcloud", "compute", "tpus", "tpu-vm", "scp"],
                ["gcloud", "compute", "tpus", "tpu-vm", "ssh"],
                ["gcloud", "compute", "tpus", "tpu-vm", "ssh"],
            ]
            assert "--worker=all" in lines[1] and "--worker=all" in lines[2]
            assert "TRANSFER_TF_KEEP_TENSORFLOW=1" in lines[2][-1]  # the TPU VM's TF stays
            assert "--worker=0" in lines[3] and "--zone=us-central2-b" in lines[3]
            remote = shlex.split(lines[3][-1].split("=", 1)[1])
            start = remote.index("pipelines")
            args = remote[start + 1 : remote.index(">")]
            remote_env = dict(w.split("=", 1) for w in remote[: start - 3] if "=" in w)
            if pod:
                assert remote_env == {"TPU_NAME": "my-tpu", "TPU_LOAD_LIBRARY": "0"}
                assert "--set=train.tpu=my-tpu" in args
            else:
                assert remote_env == {} and "--set=train.tpu=local" in args
            cases.append(_case(args, remote_env, f"{TPU_VM} {job} POD={pod}"))
    bad = subprocess.run(["bash", TPU_VM, "train"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and bad.stderr.startswith("error: usage:"), bad.stderr
    return cases


@pytest.fixture(scope="module")
def dry_runs():
    cases = _vertex_cases() + _gke_cases() + _tpu_vm_cases()
    # The container's entry point once: a Vertex spec's args exactly as `docker run` passes them.
    first = cases[0]
    cases.append({**first, "launcher": True, "source": first["source"] + " (entry point)"})
    keep = ("job", "args", "env", "launcher")
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CONFIG", "TPU_NAME")}
    env["CUDA_VISIBLE_DEVICES"] = ""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps([{k: c[k] for k in keep} for c in cases])],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    marker = [line for line in done.stdout.splitlines() if line.startswith("RESULTS ")]
    assert marker, done.stderr[-3000:]
    return list(zip(cases, json.loads(marker[0][len("RESULTS ") :]), strict=True))


def test_every_spec_command_resolves_with_dry_run(dry_runs):
    kinds = {os.path.basename(os.path.dirname(c["source"].split(" ")[0])) for c, _ in dry_runs}
    assert kinds == {"vertex", "gke", "tpu_vm"} and len(VERTEX) == 4 and len(GKE) == 1
    for case, result in dry_runs:
        where = f"{case['source']}: {result['stderr'][-2000:]}"
        assert result["code"] == 0 and "Traceback" not in result["stderr"], where
        plan = json.loads(result["stdout"])
        assert plan["job"] == case["job"], where
        model_dir = [a for a in case["spec_args"] if a.startswith("--model_dir=")][0]
        assert plan["model_dir"] == model_dir.split("=", 1)[1] and plan["model_dir"].startswith(
            f"{BUCKET}/runs/"
        )
        assert plan["data"].startswith(f"not read: {BUCKET}/tfrecords/")
        assert plan["steps"]["total_steps"] > 1000, where
        if case["job"] == "finetune":
            assert [p["name"] for p in plan["steps"]["phases"]] == ["probe", "finetune"]
            assert plan["init_checkpoint"].startswith(f"{BUCKET}/runs/imagenet_r50")
        strategy = plan["strategy"]
        if "TF_CONFIG" in case["env"]:  # Vertex AI: the chief of chief + worker pool
            assert strategy["strategy"] == "multi_worker_mirrored" and strategy["chief"], where
            assert strategy["hosts"] == 2 and strategy["task"] == "chief:0"
        elif "JOB_COMPLETION_INDEX" in case["env"]:  # GKE: the second pod is worker 1
            assert strategy["strategy"] == "multi_worker_mirrored", where
            assert strategy["task"] == "worker:1" and not strategy["chief"]
        else:  # TPU: the replica count is the TPU's, known once it answers
            assert strategy["strategy"] == "tpu" and strategy["replicas"] is None, where
            assert strategy["mixed_precision"] == "bfloat16"
            assert strategy["tpu"] in ("local", "my-tpu")


def test_the_entry_point_expands_references_like_kubelet(dry_runs):
    (launched,) = [r for c, r in dry_runs if c["launcher"]]
    direct = dry_runs[0][1]
    assert launched["code"] == 0, launched["stderr"][-2000:]
    assert json.loads(launched["stdout"]) == json.loads(direct["stdout"])


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) pairs, continuation lines joined, comments dropped."""
    text = open(os.path.join(REPO, "Dockerfile")).read().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _setup_constants() -> dict:
    """The literal module-level constants of setup.py (importing it would run setup())."""
    tree = ast.parse(open(os.path.join(REPO, "setup.py")).read())
    return {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
    }


def test_the_dockerfile_names_only_what_exists():
    setup = _setup_constants()  # the pin and the keep variable
    steps = _dockerfile()
    args = dict(a.split("=", 1) for k, a in steps if k == "ARG" and "=" in a)
    pinned = [r for r in setup["PINNED_TENSORFLOW"] if r.startswith("tensorflow==")][0]
    assert args["TF_VERSION"] == pinned.split("==")[1]  # the base image is the pinned TF
    froms = [a for k, a in steps if k == "FROM"]
    assert "tensorflow/tensorflow:${TF_VERSION} AS base-cpu" in froms
    assert "tensorflow/tensorflow:${TF_VERSION}-gpu AS base-gpu" in froms
    assert froms[-1] == "base-${VARIANT}" and args["VARIANT"] == "cpu"
    copied = []
    for kind, rest in steps:
        if kind == "COPY":
            *sources, _ = rest.split()
            copied += sources
    for source in copied:
        assert os.path.exists(os.path.join(REPO, source.rstrip("/"))), source
    assert {"setup.py", "transfer_tf/", "pipelines/", "configs/"} <= set(copied)
    env = " ".join(a for k, a in steps if k == "ENV")
    assert f"{setup['KEEP_ENV']}=1" in env
    (entry,) = [json.loads(a) for k, a in steps if k == "ENTRYPOINT"]
    assert entry == ["python3", "-m", "pipelines"]
    assert os.path.exists(os.path.join(REPO, "pipelines", "__main__.py"))
    ignored = open(os.path.join(REPO, ".dockerignore")).read().split()
    assert not set(ignored) & {s.rstrip("/") for s in copied}
    # Every config the specs pass exists in the image (copied from configs/).
    specs = VERTEX + GKE + [TPU_VM]
    for config in {c for p in specs for c in re.findall(r"configs/[\w.]+\.yaml", open(p).read())}:
        assert os.path.exists(os.path.join(REPO, config)), config
