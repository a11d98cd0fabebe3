"""Client side of an export: find the version, load it, classify image files.

Uses only the SavedModel's `serving_default` signature, so it works on any export written by
`export_saved_model` (and shows what a TF Serving client sees).

Example:
    predictor = Predictor("exports/r50")          # base dir: picks the latest version
    for p in predictor.predict_files(["cat.jpg", "dog.png"], top_k=3):
        print(p.path, p.top_k)                    # [(index, name, score), ...]
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from transfer_tf.data.image_limits import pixel_limit_error
from transfer_tf.errors import UsageError
from transfer_tf.export.saved_model import BYTES_INPUT, existing_versions

_BATCH = 32


def resolve_version_dir(path: str) -> str:
    """Returns the SavedModel directory for `path`: `path` itself, or its latest integer version.

    Raises:
      UsageError: `path` does not exist or holds neither a saved_model.pb nor a version dir.
    """
    if not tf.io.gfile.isdir(path):
        raise UsageError(f"--saved_model: directory '{path}' does not exist")
    if tf.io.gfile.exists(os.path.join(path, "saved_model.pb")):
        return path
    versions = existing_versions(path)
    if not versions:
        raise UsageError(
            f"--saved_model: '{path}' holds neither saved_model.pb nor an integer version directory"
        )
    return os.path.join(path, str(versions[-1]))


@dataclass
class Prediction:
    """Top-k result for one image: `top_k` is `[(class_index, class_name, score), ...]`."""

    path: str
    top_k: list[tuple[int, str, float]]

    def to_dict(self) -> dict:
        return {
            "image": self.path,
            "top_k": [{"index": i, "class": n, "score": s} for i, n, s in self.top_k],
        }


class Predictor:
    """A loaded export's `serving_default` (encoded image bytes in, top-k out).

    Args:
      saved_model: a version directory or the export base directory (latest version is used).
    """

    def __init__(self, saved_model: str):
        self.version_dir = resolve_version_dir(saved_model)
        try:
            self._loaded = tf.saved_model.load(self.version_dir)
        except (OSError, ValueError, tf.errors.OpError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UsageError(f"--saved_model: cannot load '{self.version_dir}': {first}") from None
        if "serving_default" not in self._loaded.signatures:
            raise UsageError(
                f"--saved_model: '{self.version_dir}' has no serving_default signature"
            )
        self._serve = self._loaded.signatures["serving_default"]
        # A classifier's top-k outputs, or a detector's boxes (transfer_tf/detection/export.py).
        self.output_names = tuple(self._serve.structured_outputs)

    def predict_bytes(self, images: Sequence[bytes]) -> dict[str, tf.Tensor]:
        """Runs `serving_default` on encoded images; raises tf.errors.InvalidArgumentError on bad bytes."""
        return self._serve(**{BYTES_INPUT: tf.constant(list(images), tf.string)})

    def outputs_of_files(
        self, paths: Sequence[str], batch_size: int = _BATCH
    ) -> Iterator[tuple[list[str], dict[str, np.ndarray]]]:
        """Runs `serving_default` on image files in batches; yields (the batch's paths, its
        outputs as NumPy arrays, one row per path).

        Raises:
          UsageError: a file is missing/unreadable or is not a decodable image (names the file).
        """
        for start in range(0, len(paths), batch_size):
            chunk = list(paths[start : start + batch_size])
            data = [_read(p) for p in chunk]
            try:
                out = self.predict_bytes(data)
            except tf.errors.InvalidArgumentError:
                # Find the culprit so the message names the file, not a batch.
                for path, blob in zip(chunk, data, strict=True):
                    try:
                        self.predict_bytes([blob])
                    except tf.errors.InvalidArgumentError as e:
                        too_large = pixel_limit_error(e.message)
                        if too_large is not None:  # the export's limit, said by its graph
                            raise UsageError(f"image '{path}' {too_large}") from None
                        raise UsageError(
                            f"image '{path}' is not a decodable image (JPEG, PNG, GIF or BMP expected)"
                        ) from None
                raise
            yield chunk, {k: v.numpy() for k, v in out.items()}

    def predict_files(self, paths: Sequence[str], top_k: int | None = None) -> list[Prediction]:
        """Classifies image files (JPEG/PNG/GIF/BMP), in batches.

        Raises:
          UsageError: a file is missing/unreadable or is not a decodable image (names the file).
        """
        results: list[Prediction] = []
        for chunk, out in self.outputs_of_files(paths):
            indices = out["top_k_indices"]
            scores = out["top_k_scores"]
            names = out["top_k_classes"]
            k = indices.shape[1] if top_k is None else min(top_k, indices.shape[1])
            for row, path in enumerate(chunk):
                results.append(
                    Prediction(
                        path=path,
                        top_k=[
                            (
                                int(indices[row, j]),
                                names[row, j].decode("utf-8"),
                                float(scores[row, j]),
                            )
                            for j in range(k)
                        ],
                    )
                )
        return results


def format_text(predictions: Sequence[Prediction]) -> str:
    """Human-readable top-k: the image path, then one `rank. name score (class i)` line per class."""
    lines = []
    for p in predictions:
        lines.append(p.path)
        for rank, (index, name, score) in enumerate(p.top_k, start=1):
            lines.append(f"  {rank}. {name:<24s} {score:.4f}  (class {index})")
    return "\n".join(lines)


def check_image_paths(paths: Sequence[str]) -> None:
    """Raises UsageError naming the first path that is missing or a directory (before any loading)."""
    for path in paths:
        if not tf.io.gfile.exists(path):
            raise UsageError(f"image '{path}' does not exist")
        if tf.io.gfile.isdir(path):
            raise UsageError(f"image '{path}' is a directory, expected an image file")


def _read(path: str) -> bytes:
    if not tf.io.gfile.exists(path):
        raise UsageError(f"image '{path}' does not exist")
    if tf.io.gfile.isdir(path):
        raise UsageError(f"image '{path}' is a directory, expected an image file")
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    except (OSError, tf.errors.OpError) as e:
        raise UsageError(f"image '{path}' cannot be read: {type(e).__name__}") from None
