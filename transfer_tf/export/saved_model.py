"""SavedModel export for TF Serving: three signatures, a label asset, versioned directories.

The export is a plain `tf.Module` holding the Keras classifier, so TF Serving, `saved_model_cli`
and `tf.saved_model.load` use it with TensorFlow alone (no project code, no Keras import).

Signatures (all outputs are float32 / int32 / string, batch-major):
  serving_default       image_bytes: string [B]   encoded JPEG/PNG/GIF/BMP. The `_bytes` suffix
                        lets TF Serving's REST API take `{"instances": [{"b64": "..."}]}`.
  serving_image_tensor  images: uint8 [B, H, W, 3], any H and W.
  serve_examples        examples: string [B]      serialized tf.train.Example with `image/encoded`.
Each returns:
  probabilities  float32 [B, C]  softmax (single-label) or sigmoid (multi-label)
  logits         float32 [B, C]
  top_k_indices  int32   [B, K]  K = min(export.top_k, C), best first
  top_k_scores   float32 [B, K]
  top_k_classes  string  [B, K]  names from the `labels.txt` asset (one per line, class order;
                                 see `label_names`: COCO runs use the label map's names)

Preprocessing in the graph is `augment.preprocess_for_eval` (bytes) and
`augment.center_crop_and_resize` (decoded tensors): the same functions as the eval input pipeline,
so serving and evaluation see identical pixels. An image above `export.max_image_pixels` (read
from its header, before decoding) is refused with InvalidArgumentError (`data/image_limits.py`).

Example:
    version_dir = export_saved_model(model, cfg, "exports/r50")  # -> "exports/r50/1"
    loaded = tf.saved_model.load(version_dir)
    out = loaded.signatures["serving_default"](image_bytes=tf.constant([jpeg_bytes]))
    out["top_k_classes"]  # string [1, 5]
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable

import tensorflow as tf

from transfer_tf.config import ExperimentConfig
from transfer_tf.data import schemas
from transfer_tf.data.augment import center_crop_and_resize, preprocess_for_eval
from transfer_tf.data.image_limits import check_pixels
from transfer_tf.data.label_maps import read_label_map
from transfer_tf.errors import OutputError, UsageError
from transfer_tf.export.warmup import write_warmup_requests
from transfer_tf.io_errors import write_error_reason
from transfer_tf.models.resnet import model_signature
from transfer_tf.models.weights import SIGNATURE_FILE
from transfer_tf.quiet import info_logs_muted

LABELS_ASSET = "labels.txt"
BYTES_INPUT = "image_bytes"
TENSOR_INPUT = "images"
EXAMPLES_INPUT = "examples"
SIGNATURES = ("serving_default", "serving_image_tensor", "serve_examples")
OUTPUTS = ("probabilities", "logits", "top_k_indices", "top_k_scores", "top_k_classes")
_TMP_PREFIX = ".tmp-export-"


def output_activation(cfg: ExperimentConfig) -> str:
    """`softmax` or `sigmoid`: `export.output_activation`, or derived from the task if `auto`."""
    if cfg.export.output_activation != "auto":
        return cfg.export.output_activation
    return "sigmoid" if cfg.data.task == "multilabel" else "softmax"


def label_names(cfg: ExperimentConfig) -> list[str]:
    """Class names in class-index order, from the first that applies:

    1. `data.label_names_file` (one name per line);
    2. for COCO (`data.schema: coco`), the names of `data.label_map_file` (its category ids where
       the map has no names), so an exported detector-style classifier answers "person", not "0";
    3. "0", "1", ... as strings.

    Raises:
      UsageError: the names file or label map is missing or invalid, or its number of classes
        differs from `data.num_classes`.
    """
    num_classes = cfg.data.num_classes
    path = cfg.data.label_names_file
    if not path:
        if cfg.data.schema == "coco" and cfg.data.label_map_file:
            return _label_map_names(cfg.data.label_map_file, num_classes)
        return [str(i) for i in range(num_classes)]
    if not tf.io.gfile.exists(path):
        raise UsageError(f"config key 'data.label_names_file': file '{path}' does not exist")
    with tf.io.gfile.GFile(path, "r") as f:
        names = [line.strip() for line in f.read().splitlines()]
    # A trailing blank line is common in hand-written files; blank names in the middle are not.
    while names and not names[-1]:
        names.pop()
    if len(names) != num_classes:
        raise UsageError(
            f"config key 'data.label_names_file': '{path}' has {len(names)} names, "
            f"expected data.num_classes={num_classes} (one per line, class-index order)"
        )
    return names


def _label_map_names(path: str, num_classes: int) -> list[str]:
    """Names of a COCO label map in class-index order; a nameless category is its id."""
    label_map = read_label_map(path)
    if label_map.num_classes != num_classes:
        raise UsageError(
            f"config key 'data.label_map_file': '{path}' has {label_map.num_classes} categories, "
            f"expected data.num_classes={num_classes}"
        )
    return label_map.display_names()


def labels_table(asset: tf.saved_model.Asset) -> tf.lookup.StaticHashTable:
    """Class index (int64) -> name (string, "" when out of range), initialised from `asset` (one
    name per line) when the SavedModel loads."""
    return tf.lookup.StaticHashTable(
        tf.lookup.TextFileInitializer(
            asset,
            key_dtype=tf.int64,
            key_index=tf.lookup.TextFileIndex.LINE_NUMBER,
            value_dtype=tf.string,
            value_index=tf.lookup.TextFileIndex.WHOLE_LINE,
        ),
        default_value="",
    )


def add_image_signatures(module: tf.Module) -> None:
    """Sets `module.serve_bytes` and `module.serve_image_tensor`: `module._serve_bytes` over a
    [batch] tf.string of encoded images and `module._serve_image_tensor` over a [batch, H, W, 3]
    uint8 batch, traced with the serving input names every task's signatures share."""
    module.serve_bytes = tf.function(
        module._serve_bytes,
        autograph=False,
        input_signature=[tf.TensorSpec([None], tf.string, name=BYTES_INPUT)],
    )
    module.serve_image_tensor = tf.function(
        module._serve_image_tensor,
        autograph=False,
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name=TENSOR_INPUT)],
    )


def image_signature_functions(module: tf.Module) -> dict:
    """The concrete functions of the two signatures `add_image_signatures` set on `module`, keyed
    by signature name (what every task's export saves; the classifier adds `serve_examples`)."""
    return {
        "serving_default": module.serve_bytes.get_concrete_function(),
        "serving_image_tensor": module.serve_image_tensor.get_concrete_function(),
    }


class Untracked:
    """Holds an object without making it a SavedModel dependency."""

    def __init__(self, value):
        self.value = value


class ServingModule(tf.Module):
    """The exported object: the classifier plus the three serving functions.

    Args:
      model: Keras classifier, images `[B, S, S, 3]` in 0..255 -> logits `[B, C]`.
      cfg: the experiment config (image size, crop fraction, task, top-k).
      labels_path: local text file with one class name per line; saved as an asset.
    """

    def __init__(self, model, cfg: ExperimentConfig, labels_path: str):
        super().__init__(name="classifier_export")
        # Only the variables are saved, not Keras' object graph: walking and re-tracing the
        # layers makes saving ~2x slower and the loader never needs them (as keras ExportArchive).
        self._model = Untracked(model)
        # The raw tf.Variables, not keras.Variable wrappers: a wrapper exports as a second copy
        # of the variable that the TF1/C++ loader (TF Serving, saved_model_cli run) restores
        # while the graph reads the uninitialised original.
        self.model_variables = [getattr(v, "value", v) for v in model.variables]
        self._image_size = int(cfg.data.image_size)
        self._crop_fraction = float(cfg.data.eval_crop_fraction)
        self._num_classes = int(cfg.data.num_classes)
        self._top_k = min(int(cfg.export.top_k), self._num_classes)
        self._max_pixels = int(cfg.export.max_image_pixels)
        self._activation = output_activation(cfg)
        inputs = getattr(model, "inputs", None)
        self._input_dtype = inputs[0].dtype if inputs else "float32"
        self.labels_asset = tf.saved_model.Asset(labels_path)
        self.labels_table = labels_table(self.labels_asset)
        size = self._image_size
        add_image_signatures(self)
        self.serve_examples = tf.function(
            self._serve_examples,
            autograph=False,
            input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES_INPUT)],
        )
        self._image_spec = tf.TensorSpec([size, size, 3], tf.uint8)
        # One traced copy of the model shared by the three signatures (3x faster save and load).
        self.classify = tf.function(
            self._classify,
            autograph=False,
            input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name=TENSOR_INPUT)],
        )

    def signatures(self) -> dict:
        """The concrete functions to save, keyed by signature name."""
        return {
            **image_signature_functions(self),
            "serve_examples": self.serve_examples.get_concrete_function(),
        }

    def _classify(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        """uint8 `[B, S, S, 3]` -> the output dict (float32 even for a mixed-precision model)."""
        logits = self._model.value(tf.cast(images, self._input_dtype), training=False)
        logits = tf.cast(logits, tf.float32)
        if self._activation == "sigmoid":
            probabilities = tf.sigmoid(logits)
        else:
            probabilities = tf.nn.softmax(logits, axis=-1)
        scores, indices = tf.math.top_k(probabilities, k=self._top_k)
        classes = self.labels_table.lookup(tf.cast(indices, tf.int64))
        return {
            "probabilities": probabilities,
            "logits": logits,
            "top_k_indices": tf.cast(indices, tf.int32),
            "top_k_scores": scores,
            "top_k_classes": classes,
        }

    def _decode_batch(self, image_bytes: tf.Tensor) -> tf.Tensor:
        # Images differ in size before the crop, so preprocessing is per element.
        return tf.map_fn(
            lambda b: preprocess_for_eval(
                b, self._image_size, self._crop_fraction, self._max_pixels
            ),
            image_bytes,
            fn_output_signature=self._image_spec,
        )

    def _serve_bytes(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        return self.classify(self._decode_batch(image_bytes))

    def _serve_image_tensor(self, images: tf.Tensor) -> dict[str, tf.Tensor]:
        # Decoded already, but the crop and the float resize would still copy it several times.
        check = check_pixels(tf.shape(images)[1:3], self._max_pixels)
        with tf.control_dependencies([check] if check is not None else []):
            images = tf.identity(images)
        resized = tf.map_fn(
            lambda im: center_crop_and_resize(im, self._image_size, self._crop_fraction),
            images,
            fn_output_signature=self._image_spec,
        )
        return self.classify(resized)

    def _serve_examples(self, examples: tf.Tensor) -> dict[str, tf.Tensor]:
        features = tf.io.parse_example(
            examples, {schemas.ENCODED: tf.io.FixedLenFeature([], tf.string)}
        )
        return self.classify(self._decode_batch(features[schemas.ENCODED]))


def existing_versions(export_dir: str) -> list[int]:
    """Integer version subdirectories of `export_dir`, ascending (temp dirs are not versions)."""
    if not tf.io.gfile.isdir(export_dir):
        return []
    versions = []
    for name in tf.io.gfile.listdir(export_dir):
        name = name.rstrip("/")
        if name.isdigit() and tf.io.gfile.isdir(os.path.join(export_dir, name)):
            versions.append(int(name))
    return sorted(versions)


def write_model_signature(model, saved_model_dir: str) -> str:
    """Writes `resnet.model_signature(model)` as `assets.extra/model_signature.json` of a
    SavedModel (what `transfer.restore` checks before restoring it as a backbone); returns it."""
    path = os.path.join(saved_model_dir, SIGNATURE_FILE)
    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(json.dumps(model_signature(model), indent=1))
    return path


def export_saved_model(
    model,
    cfg: ExperimentConfig,
    export_dir: str,
    *,
    version: int | None = None,
    module_factory: Callable[..., tf.Module] | None = None,
    names: list[str] | None = None,
) -> str:
    """Exports `model` as `export_dir/<version>/` (TF Serving layout) and returns that path.

    The SavedModel is written under a temp name in `export_dir` and renamed when complete, so a
    crashed export never looks like a version to TF Serving (which only loads integer names). It
    holds TF Serving warm-up requests, one per signature (`export.warmup`).

    Args:
      model: Keras classifier, uint8/float images `[B, S, S, 3]` in 0..255 -> logits `[B, C]`.
      cfg: the run's resolved config (data.image_size, data.eval_crop_fraction, data.num_classes,
        data.label_names_file, data.task, export.top_k, export.output_activation).
      export_dir: base directory (any TF filesystem path).
      version: integer version; None = one more than the largest existing version (1 if none).
      module_factory: `(model, cfg, labels_path) -> tf.Module` with `signatures()`, the object to
        save instead of `ServingModule` (a detector's: `detection.export.DetectionServingModule`).
      names: the class names of the labels asset; default `label_names(cfg)` (a segmenter's
        class map has its own: `segmentation.evaluation.class_names`).
    Raises:
      UsageError: the version already exists, or the label names file is invalid.
    """
    names = label_names(cfg) if names is None else names
    if version is None:
        version = (existing_versions(export_dir) or [0])[-1] + 1
    if version <= 0:
        raise UsageError(f"--version: expected a positive integer, got {version}")
    final_dir = os.path.join(export_dir, str(version))
    if tf.io.gfile.exists(final_dir):
        raise UsageError(f"export version '{final_dir}' already exists (versions are immutable)")
    tf.io.gfile.makedirs(export_dir)
    tmp_dir = os.path.join(export_dir, f"{_TMP_PREFIX}{version}-{os.getpid()}")
    scratch = tempfile.mkdtemp(prefix="transfer_tf_labels_")
    try:
        labels_path = os.path.join(scratch, LABELS_ASSET)
        with open(labels_path, "w", encoding="utf-8") as f:
            f.write("".join(f"{name}\n" for name in names))
        module = (module_factory or ServingModule)(model, cfg, labels_path)
        if tf.io.gfile.exists(tmp_dir):
            tf.io.gfile.rmtree(tmp_dir)
        # TF logs a line per signature about captured-variable input names (harmless, ~100
        # numbers each); keep INFO logs of the binaries readable.
        with info_logs_muted():
            tf.saved_model.save(module, tmp_dir, signatures=module.signatures())
        write_model_signature(model, tmp_dir)
        # TF Serving runs these at load: the first user request is served at full speed.
        size = cfg.detection.image_size if cfg.transfer.task == "detection" else cfg.data.image_size
        name = os.path.basename(os.path.normpath(export_dir))
        write_warmup_requests(tmp_dir, module.signatures(), name, size)
        tf.io.gfile.rename(tmp_dir, final_dir, overwrite=False)
    except BaseException as e:
        if tf.io.gfile.exists(tmp_dir):
            tf.io.gfile.rmtree(tmp_dir)
        reason = write_error_reason(e)
        if reason is not None:  # disk full, read-only: one line, not a traceback
            raise OutputError(f"--export_dir: cannot write '{tmp_dir}': {reason}") from None
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final_dir
