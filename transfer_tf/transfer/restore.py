"""Restore a pretrained backbone into a new classifier, strictly.

Three kinds of source (`detect_source_kind`):
  model_dir    a pretraining run directory (`config.yaml` + `checkpoints/`): its latest checkpoint,
               or one checkpoint prefix of it (`RUN/checkpoints/ckpt-N`), read through
               `training.checkpoints.load_model` and copied by layer name. `check_source` reads
               that checkpoint in full first: a damaged one is refused before the new run's
               folder exists, naming the file and the run's intact checkpoints.
  keras_weights  a Keras weights file (`.h5` legacy layout, e.g. the standard
               `resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`, or Keras 3 `.weights.h5`),
               by layer name (read with `models.weights.read_keras_backbone`).
  saved_model  a SavedModel written by `export.saved_model` (a version dir, or the export base dir:
               its highest version). Variables are matched by their TF names (`conv1_conv/kernel`,
               kept in `saved_model.pb`), their values read from `variables/` without loading the
               serving functions.
A self-supervised run's checkpoint (`ssl.method`) also holds the method's heads and target network
(`ssl_*` objects): they are dropped, and they must be exactly the method's (`RestoreReport.dropped`
lists them); the classifier in it restores like a supervised one.
Only the backbone (every stage but `head`) is restored; the head stays freshly initialised. Any
backbone variable that the source lacks (missing), any source variable that is neither backbone nor
the source's own head (unexpected), and any shape mismatch is a UsageError listing them: a silent
partial restore is the classic transfer bug.

Shapes do not say everything: the source must also have been trained with the model's input
normalisation (`model.input_preprocessing`, mean/stddev) and, for ResNet-50/101/152, the same
`model.resnet_variant` (v1 and v1.5 have identical variables). What is known of the source is
compared before anything is assigned (`models.weights.check_signature`): a model_dir's
config.yaml, the `assets.extra/model_signature.json` that export writes into a SavedModel (older
exports without it are not checked), and for a legacy Keras `.h5` the keras.applications ImageNet
recipe (caffe inputs, v1). A mismatch is a UsageError naming the config key.

Example:
    model = build_classifier(cfg.model, num_classes=80)
    report = restore_backbone(model, "runs/pretrain_r50")          # or .h5 / export dir
    report.kind, report.num_variables                               # ("model_dir", 318)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from transfer_tf.errors import UsageError
from transfer_tf.models.resnet import backbone_layers, config_signature
from transfer_tf.models.weights import (
    SIGNATURE_FILE,
    assign_backbone,
    check_signature,
    read_keras_backbone,
    weight_file_signature,
)
from transfer_tf.ssl.settings import CHECKPOINT_OBJECTS

KINDS = ("model_dir", "keras_weights", "saved_model")
# A training checkpoint's own state beside the classifier (training/loop.py), never restored here.
_RUN_STATE = {
    "optimizer",
    "global_step",
    "optimizer_start_step",
    "ema",
    "train_iterator",
    "save_counter",
    "_CHECKPOINTABLE_OBJECT_GRAPH",
}


# Classifier tops of keras.applications models (full-model files): never part of a backbone.
@dataclass(frozen=True)
class RestoreReport:
    """What `restore_backbone` did."""

    kind: str
    path: str
    num_layers: int
    num_variables: int
    # Checkpoint objects left behind besides the run's own state (an SSL run's heads/target).
    dropped: tuple[str, ...] = ()


def _saved_model_dir(path: str) -> str | None:
    """`path` if it is a SavedModel, else its highest integer version that is one, else None."""
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return path
    versions = []
    for name in tf.io.gfile.listdir(path):
        name = name.rstrip("/")
        if name.isdigit() and tf.io.gfile.exists(os.path.join(path, name, "saved_model.pb")):
            versions.append(int(name))
    return os.path.join(path, str(max(versions))) if versions else None


def detect_source_kind(path: str, flag: str = "--init_checkpoint") -> str:
    """One of `KINDS` for `path`, or a UsageError saying what was expected."""
    expected = (
        "expected a pretraining model_dir (config.yaml + checkpoints/), a Keras weights file "
        "(.h5 / .weights.h5) or a SavedModel (dir with saved_model.pb, or an export dir of versions)"
    )
    if not path:
        raise UsageError(f"{flag} is empty; {expected}")
    if _checkpoint_run_dir(path):
        return "model_dir"  # a checkpoint prefix of a run: that checkpoint, not the newest
    if not tf.io.gfile.exists(path):
        raise UsageError(f"{flag}: '{path}' does not exist")
    if not tf.io.gfile.isdir(path):
        if path.endswith(".h5"):
            return "keras_weights"
        raise UsageError(f"{flag}: '{path}' is a file but not .h5; {expected}")
    if tf.io.gfile.exists(os.path.join(path, "config.yaml")):
        return "model_dir"
    if _saved_model_dir(path):
        return "saved_model"
    raise UsageError(f"{flag}: '{path}' is none of the known sources; {expected}")


def _checkpoint_run_dir(path: str) -> str | None:
    """The run dir of a checkpoint prefix `RUN/checkpoints/ckpt-N` (its files, damaged or not,
    exist and RUN holds a config.yaml), else None."""
    if tf.io.gfile.isdir(path) or not tf.io.gfile.glob(f"{path}.*"):
        return None
    run_dir = os.path.dirname(os.path.dirname(path.rstrip("/")))
    return run_dir if tf.io.gfile.exists(os.path.join(run_dir, "config.yaml")) else None


def check_source(path: str, flag: str = "--init_checkpoint") -> str:
    """`detect_source_kind`, and for a training run the checkpoint it would restore read in full:
    a damaged one is a UsageError naming the file and the run's intact checkpoints (a run dir
    means its newest checkpoint; pass one of those prefixes instead). Call it before creating
    the new run's folder. Returns the kind."""
    from transfer_tf.training import checkpoint_health
    from transfer_tf.training.checkpoints import resolve_checkpoint

    kind = detect_source_kind(path, flag)
    if kind == "model_dir":
        prefix = resolve_checkpoint(path)
        why = checkpoint_health.find_damage(prefix)
        if why is not None:
            raise checkpoint_health.damaged_error(prefix, why, flag)
    return kind


def _from_model(source_model: keras.Model) -> dict[str, dict[str, np.ndarray]]:
    return {
        layer.name: {w.name: w.numpy() for w in layer.weights}
        for layer in source_model.layers
        if layer.weights
    }


def _dropped_objects(path: str, method: str) -> tuple[str, ...]:
    """The top-level objects of `path`'s latest checkpoint besides `model` and the run's state:
    for a self-supervised run (`method`), exactly that method's `CHECKPOINT_OBJECTS`, else a
    UsageError (a checkpoint holding something else is not the run its config describes)."""
    from transfer_tf.training.checkpoints import resolve_checkpoint

    prefix = resolve_checkpoint(path)
    top = {name.split("/", 1)[0] for name, _ in tf.train.list_variables(prefix)}
    extra = tuple(sorted(top - _RUN_STATE - {"model"}))
    want = tuple(sorted(CHECKPOINT_OBJECTS.get(method, ())))
    if method in CHECKPOINT_OBJECTS and extra != want:
        raise UsageError(
            f"backbone source '{path}' is a {method} run, but its checkpoint '{prefix}' holds "
            f"{list(extra)} beside the classifier, not exactly the method's {list(want)}"
        )
    return extra


def _read_model_dir(
    model: keras.Model, path: str
) -> tuple[dict[str, dict[str, np.ndarray]], tuple[str, ...]]:
    """(`{layer: {weight: array}}` of the run's classifier, checkpoint objects dropped)."""
    from transfer_tf.training.checkpoints import load_model, read_run_config  # training stack

    run_dir = _checkpoint_run_dir(path)  # a prefix names its checkpoint; a run dir its newest
    checkpoint = path if run_dir else None
    run_dir = run_dir or path
    # Compare architectures from the config before paying for a model build.
    run_cfg = read_run_config(run_dir)
    source_cfg = run_cfg.model
    if source_cfg.name != model.name:
        raise UsageError(
            f"backbone source '{path}' is a {source_cfg.name}, the model is a {model.name}"
        )
    check_signature(model, config_signature(source_cfg), path)
    dropped = _dropped_objects(path, run_cfg.ssl.method)
    source_model, _ = load_model(run_dir, checkpoint)
    return _from_model(source_model), dropped


def saved_model_signature(path: str) -> dict | None:
    """The model signature an export recorded (SIGNATURE_FILE), or None for older exports."""
    sig_path = os.path.join(_saved_model_dir(path), SIGNATURE_FILE)
    if not tf.io.gfile.exists(sig_path):
        logging.warning("%s has no %s: input preprocessing/variant not checked", path, sig_path)
        return None
    with tf.io.gfile.GFile(sig_path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError:
            raise UsageError(f"SavedModel '{path}': {SIGNATURE_FILE} is not valid JSON") from None


def _read_saved_model(path: str) -> dict[str, dict[str, np.ndarray]]:
    """`{layer: {weight: array}}` of a SavedModel's variables named `layer/weight`."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = _saved_model_dir(path)
    proto = saved_model_pb2.SavedModel()
    try:
        with tf.io.gfile.GFile(os.path.join(saved, "saved_model.pb"), "rb") as f:
            proto.ParseFromString(f.read())
        reader = tf.train.load_checkpoint(os.path.join(saved, "variables", "variables"))
    except Exception as e:  # noqa: BLE001  (any corruption is the same user-facing problem)
        raise UsageError(f"SavedModel '{saved}': cannot read it ({type(e).__name__})") from None
    graph = proto.meta_graphs[0].object_graph_def
    # Breadth-first from the root: a variable's checkpoint key is its first object path.
    stored: dict[str, dict[str, np.ndarray]] = {}
    seen, queue = {0}, [(0, "")]
    while queue:
        node_id, prefix = queue.pop(0)
        node = graph.nodes[node_id]
        if node.WhichOneof("kind") == "variable" and "/" in node.variable.name:
            layer, weight = node.variable.name.rsplit("/", 1)
            weight = weight.split(":")[0]
            key = f"{prefix}/.ATTRIBUTES/VARIABLE_VALUE"
            if reader.has_tensor(key):
                stored.setdefault(layer, {})[weight] = reader.get_tensor(key)
        for child in node.children:
            if child.node_id not in seen:
                seen.add(child.node_id)
                queue.append((child.node_id, f"{prefix}/{child.local_name}".lstrip("/")))
    if not stored:
        raise UsageError(
            f"SavedModel '{saved}' holds no named classifier variables "
            "(expected one written by pipelines/export.py)"
        )
    return stored


def restore_backbone(
    model: keras.Model, path: str, flag: str = "--init_checkpoint"
) -> RestoreReport:
    """Restores `model`'s backbone from a model_dir, Keras weights file or SavedModel (see module
    doc); the head is left as initialised.

    Raises:
      UsageError: unknown/unreadable source, any missing/unexpected/mis-shaped backbone variable,
        or a source trained with other input preprocessing / another ResNet variant (naming the
        `model.*` key).
    """
    kind = detect_source_kind(path, flag)
    signature = None  # model_dir: checked from its config before its checkpoint is read
    dropped: tuple[str, ...] = ()
    if kind == "keras_weights":
        stored = read_keras_backbone(model, path)
        signature = weight_file_signature(path)
    elif kind == "model_dir":
        stored, dropped = _read_model_dir(model, path)
    else:
        signature = saved_model_signature(path)
        stored = _read_saved_model(path)
    count = assign_backbone(model, stored, path, signature)
    layers = [la for la in backbone_layers(model) if la.weights]
    logging.info(
        "Restored %d backbone variables (%d layers) from %s %s%s",
        count,
        len(layers),
        kind,
        path,
        f"; dropped {', '.join(dropped)}" if dropped else "",
    )
    return RestoreReport(
        kind=kind, path=path, num_layers=len(layers), num_variables=count, dropped=dropped
    )
