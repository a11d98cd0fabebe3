"""Strict loading of Keras weight files into the backbone of a classifier (by layer name).

Two file layouts are read:
* legacy Keras HDF5 (`.h5`, e.g. the standard `resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5`
  from keras.applications): root attribute `layer_names`, one group per layer with `weight_names`;
  a whole-model `.h5` keeps the same under `model_weights/`.
* Keras 3 `.weights.h5`: `layers/<layer name>/vars/<i>` for a functional model.

`assign_backbone` is the one strict loader (every backbone source goes through it: these files, a
pretraining run, an exported SavedModel, see `transfer.restore`): every backbone layer with weights
must be in the source with the same weight names and shapes, and every source layer must be a
backbone layer or a head (a classifier top such as `predictions` is ignored): a silent partial
restore is the classic transfer bug, so anything else is a UsageError listing the names.

Shapes are not enough: weights also depend on the input normalisation they were trained with and,
for bottleneck ResNets, on where each stage downsamples (v1 and v1.5 have identical variables).
`check_signature` compares what is known of a source with the model (`resnet.model_signature`);
a legacy-layout `.h5` is taken to be keras.applications ImageNet weights (caffe inputs, v1), the
only kind of legacy file this project reads (it writes Keras 3 `.weights.h5` itself).

Example:
    model = build_classifier(cfg.model, num_classes=80)
    load_backbone_weights(model, "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")
"""

from __future__ import annotations

import os

import keras
import numpy as np

from transfer_tf.errors import UsageError
from transfer_tf.models.resnet import NEW_STAGES, backbone_layers, model_signature, stage_of

# Top layers of keras.applications models: present in full-model files, never in our backbone.
_IGNORED_FILE_LAYERS = ("predictions", "probs", "fc1000", "avg_pool", "max_pool")
# Written by export.saved_model into a SavedModel (TF Serving ignores assets.extra/): the exported
# model's `resnet.model_signature`, checked when the export is restored as a backbone.
SIGNATURE_FILE = os.path.join("assets.extra", "model_signature.json")
# What the keras.applications ImageNet ResNet weights (legacy .h5 layout) were trained with.
KERAS_APPLICATIONS_SIGNATURE = {"input_preprocessing": "caffe", "resnet_variant": "v1"}
# Signature keys -> the config key that sets them in the model being restored into.
_SIGNATURE_KEYS = {
    "name": "model.name",
    "input_preprocessing": "model.input_preprocessing",
    "mean_rgb": "model.mean_rgb",
    "stddev_rgb": "model.stddev_rgb",
    "resnet_variant": "model.resnet_variant",
}


def check_signature(model: keras.Model, source: dict | None, where: str) -> None:
    """Raises UsageError naming the config keys where `source` (a partial `model_signature`-style
    dict; None or missing/None entries = unknown) disagrees with `model`'s own signature."""
    if not source:
        return
    target = model_signature(model)
    problems = []
    for key, config_key in _SIGNATURE_KEYS.items():
        want, have = source.get(key), target.get(key)
        if want is None or have is None:
            continue
        if isinstance(want, (list, tuple)):
            same = len(want) == len(have) and np.allclose(want, have, rtol=1e-6, atol=0.0)
        else:
            same = want == have
        if not same:
            problems.append(f"{config_key} is {_value(have)}, the source has {_value(want)}")
    if problems:
        raise UsageError(
            f"backbone source '{where}' does not fit model '{model.name}': {'; '.join(problems)} "
            "(set the model's keys to the source's)"
        )


def _value(v) -> str:
    return repr(v) if isinstance(v, str) else str([round(float(x), 4) for x in v])


def is_legacy_weight_file(path: str) -> bool:
    """True for the legacy Keras HDF5 layout (root or `model_weights/` attribute `layer_names`)."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            root = f["model_weights"] if "model_weights" in f else f
            return "layer_names" in root.attrs
    except OSError:
        return False


def weight_file_signature(path: str) -> dict | None:
    """What a weights file's backbone expects (see module doc); None when the file cannot say."""
    return dict(KERAS_APPLICATIONS_SIGNATURE) if is_legacy_weight_file(path) else None


def _decode(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_weight_file(path: str) -> dict[str, list[np.ndarray]]:
    """Returns `{layer name: [arrays in the layer's weight order]}` for layers that have weights."""
    import h5py

    if not os.path.isfile(path):
        raise UsageError(f"weights file '{path}' does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise UsageError(f"weights file '{path}': not an HDF5 weights file ({e})") from None
    with f:
        out: dict[str, list[np.ndarray]] = {}
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" in root.attrs:
            for lname in (_decode(n) for n in root.attrs["layer_names"]):
                group = root[lname]
                names = [_decode(n) for n in group.attrs.get("weight_names", [])]
                if names:
                    out[lname] = [np.asarray(group[n]) for n in names]
            return out
        if "layers" in f:
            for lname, group in f["layers"].items():
                if "vars" in group and len(group["vars"]):
                    vars_ = group["vars"]
                    # Group keys are class-derived ("conv2d_3"); the layer name is an attribute.
                    name = _decode(vars_.attrs.get("name", lname))
                    out[name] = [np.asarray(vars_[str(i)]) for i in range(len(vars_))]
            return out
    raise UsageError(
        f"weights file '{path}': no Keras weights found (expected a legacy .h5 with 'layer_names' "
        "or a Keras 3 .weights.h5)"
    )


def read_keras_backbone(model: keras.Model, path: str) -> dict[str, dict[str, np.ndarray]]:
    """`{layer: {weight name: array}}` of a Keras weights file, for `assign_backbone`.

    The files store each layer's weights in its weight order, so names come from `model`'s layer of
    the same name; keras.applications top layers (`predictions`, ...) are dropped."""
    by_name = {layer.name: layer for layer in model.layers}
    stored = {}
    for name, arrays in read_weight_file(path).items():
        if name in _IGNORED_FILE_LAYERS:
            continue
        layer = by_name.get(name)
        names = [w.name for w in layer.weights] if layer is not None else []
        if len(names) != len(arrays):
            names = [f"weight{i}" for i in range(len(arrays))]
        stored[name] = dict(zip(names, arrays, strict=True))
    return stored


def _short(names: list[str], n: int = 6) -> str:
    more = f" (+{len(names) - n} more)" if len(names) > n else ""
    return ", ".join(names[:n]) + more


def assign_backbone(
    model: keras.Model,
    stored: dict[str, dict[str, np.ndarray]],
    source: str,
    signature: dict | None = None,
) -> int:
    """Assigns `stored` (`{layer name: {weight name: array}}`) to `model`'s backbone.

    Every backbone layer with weights must be in `stored` with the same weight names and shapes;
    every stored layer must be a backbone layer or a `head_*` / `fpn*` layer (the source's own
    head or a detector's pyramid, which are not restored); `signature` (what is known of the source's input preprocessing / ResNet
    variant, see module doc) must agree with the model. Returns the number of variables assigned.
    Raises:
      UsageError: listing missing layers, unexpected layers and mismatched weights, or naming the
        config keys the source disagrees on (nothing is assigned in either case).
    """
    targets = {layer.name: layer for layer in backbone_layers(model) if layer.weights}
    missing = sorted(set(targets) - set(stored))
    unexpected = sorted(n for n in set(stored) - set(targets) if stage_of(n) not in NEW_STAGES)
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing backbone layers: {_short(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected layers: {_short(unexpected)}")
    mismatched = []
    for name in sorted(set(targets) & set(stored)):
        want = {w.name: tuple(w.shape) for w in targets[name].weights}
        got = {k: tuple(np.shape(a)) for k, a in stored[name].items()}
        if want != got:
            mismatched.append(f"{name} {got} vs model {want}")
    if mismatched:
        problems.append(f"{len(mismatched)} mismatched layers: {_short(mismatched, 2)}")
    if problems:
        raise UsageError(
            f"backbone source '{source}' does not fit model '{model.name}': {'; '.join(problems)}"
        )
    check_signature(model, signature, source)
    count = 0
    for name, layer in targets.items():
        for variable in layer.weights:
            variable.assign(np.asarray(stored[name][variable.name]).astype(variable.dtype))
            count += 1
    return count


def load_backbone_weights(model: keras.Model, path: str) -> int:
    """Assigns `model`'s backbone (all stages but `head`) from a Keras weights file, strictly
    (`assign_backbone`); returns the number of variables assigned.

    Raises:
      UsageError: missing file, missing/unexpected layers, or shape mismatches (all listed); a
        legacy Keras ImageNet file into a model without `caffe` inputs or with the v1.5 stride.
    """
    return assign_backbone(
        model, read_keras_backbone(model, path), path, weight_file_signature(path)
    )
