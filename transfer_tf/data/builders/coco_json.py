"""Reads a COCO JSON file in one streaming pass, keeping only what planning needs.

`instances_train2017.json` is ~450 MB; `json.load` turns it into several GB of Python objects,
mostly polygon coordinates. This reader parses the top-level object piece by piece
(`json.JSONDecoder.raw_decode` over a window that starts at 1 MiB), so the caller holds only the
images (id, file_name, height, width), the categories and, per annotation, its image, its category
and the byte range of its JSON text in the file. Workers re-read an image's annotations from those
byte ranges (`read_annotation`): segmentations are parsed only where masks are made.

Example:
    coco = read_coco_json("instances_val2017.json", "object_annotations_file")
    coco.images[0]             # (397133, "000000397133.jpg", 427, 640)
    coco.ann_offset[0], coco.ann_length[0]   # bytes of annotation 0 in the file
    read_annotation(coco.path, coco.ann_offset[0], coco.ann_length[0])["bbox"]
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from transfer_tf.errors import UsageError

_CHUNK = 1 << 20
_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
# raw_decode errors that a longer window may cure (the value was cut at the window's end).
_MAYBE_CUT = ("Unterminated string", "Invalid \\uXXXX escape")


@dataclass
class CocoJson:
    """What planning needs from one COCO JSON file.

    Attributes:
      path: the file; sha256: hex digest of its bytes.
      images: (id, file_name, height, width) per entry of "images", in file order.
      categories: (id, name) sorted by id; None when the file has no "categories" key.
      has_annotations: whether the file has an "annotations" key (test-dev image info has none).
      image_codes: {image id: small int} for every image id an annotation names.
      ann_image, ann_category, ann_offset, ann_length: int64 arrays, one entry per annotation in
        file order: its image's code, category id, and the byte range of its JSON object.
    """

    path: str
    sha256: str = ""
    images: list[tuple[Any, str, int, int]] = field(default_factory=list)
    categories: list[tuple[int, str]] | None = None
    has_annotations: bool = False
    image_codes: dict[Any, int] = field(default_factory=dict)
    ann_image: array = field(default_factory=lambda: array("q"))
    ann_category: array = field(default_factory=lambda: array("q"))
    ann_offset: array = field(default_factory=lambda: array("q"))
    ann_length: array = field(default_factory=lambda: array("q"))


def field_of(obj: Any, key: str, path: str, what: str) -> Any:
    """obj[key], or a UsageError naming the file and the entry."""
    if not isinstance(obj, dict) or key not in obj:
        raise UsageError(f"{path}: {what} without '{key}': {str(obj)[:80]}")
    return obj[key]


def annotation_fields(a: Any, path: str) -> tuple[float, float, float, float, int, int, float]:
    """(x, y, w, h, category id, iscrowd, area) of one annotation; UsageError when malformed.

    The one parser of an annotation's non-mask fields: planning validates with it, workers read
    with it."""
    cat = int(field_of(a, "category_id", path, "annotation"))
    bbox = field_of(a, "bbox", path, "annotation")
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise UsageError(f"{path}: annotation bbox must be [x, y, w, h]: {str(a)[:80]}")
    x, y, bw, bh = (float(v) for v in bbox)
    return x, y, bw, bh, cat, int(a.get("iscrowd", 0)), float(a.get("area", bw * bh))


def read_annotation(path: str, offset: int, length: int, f: BinaryIO | None = None) -> dict:
    """The annotation object stored at bytes [offset, offset + length) of `path`."""
    if f is None:
        with open(path, "rb") as f:
            return read_annotation(path, offset, length, f)
    f.seek(offset)
    value = json.loads(f.read(length))
    if not isinstance(value, dict):
        raise ValueError(f"{path}: byte {offset} holds no annotation object")
    return value


class _Stream:
    """A window over a UTF-8 file that knows the byte offset and line of its read position."""

    def __init__(self, f: BinaryIO, where: str) -> None:
        self.f, self.where = f, where
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.sha = hashlib.sha256()
        self.buf, self.pos = "", 0
        self.byte_pos = 0  # byte offset of buf[pos] in the file
        self.lines = 0  # newlines before buf[0]
        self.eof = False

    def error(self, pos: int | None = None) -> UsageError:
        pos = self.pos if pos is None else pos
        line = self.lines + self.buf.count("\n", 0, pos) + 1
        return UsageError(f"{self.where} line {line}: not valid JSON")

    def more(self) -> bool:
        """Reads more text (at least as much as is unread, so a long value costs O(n))."""
        if self.eof:
            return False
        data = self.f.read(max(_CHUNK, len(self.buf) - self.pos))
        self.sha.update(data)
        try:
            text = self.decoder.decode(data, final=not data)
        except UnicodeDecodeError:
            raise UsageError(f"{self.where}: not UTF-8 text") from None
        self.lines += self.buf.count("\n", 0, self.pos)
        self.buf = self.buf[self.pos :] + text
        self.pos = 0
        self.eof = not data
        return bool(data)

    def advance(self, new_pos: int) -> None:
        piece = self.buf[self.pos : new_pos]
        self.byte_pos += len(piece) if piece.isascii() else len(piece.encode("utf-8"))
        self.pos = new_pos

    def peek(self) -> str:
        """The next non-blank character ("" at the end of the file), not consumed."""
        while True:
            self.advance(_WS.match(self.buf, self.pos).end())
            if self.pos < len(self.buf):
                return self.buf[self.pos]
            if not self.more():
                return ""

    def expect(self, chars: str) -> str:
        ch = self.peek()
        if not ch or ch not in chars:
            raise self.error()
        self.advance(self.pos + 1)
        return ch

    def value(self) -> tuple[Any, int, int]:
        """The next JSON value, its byte offset and byte length."""
        self.peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buf, self.pos)
            except json.JSONDecodeError as e:
                # An error near the window's end may be a cut token ("2.5e-" + "05", "tr" +
                # "ue"); only strings (handled by message) run longer than 64 characters.
                cut = e.pos >= len(self.buf) - 64 or e.msg.startswith(_MAYBE_CUT)
                if cut and self.more():
                    continue
                raise self.error(e.pos) from None
            # A number (or literal) that ends the window may go on in the next read.
            if end == len(self.buf) and self.more():
                continue
            start = self.byte_pos
            self.advance(end)
            return value, start, self.byte_pos - start


def _walk(stream: _Stream, on_item: dict[str, Callable[[Any, int, int], None]]) -> set[str]:
    """Parses the top-level object; elements of arrays under `on_item`'s keys go to the handler
    one by one (other values are parsed and dropped). Returns the top-level keys seen."""
    if stream.peek() != "{":
        raise UsageError(f"{stream.where}: expected a COCO JSON object with an 'images' list")
    stream.advance(stream.pos + 1)
    keys: set[str] = set()
    if stream.peek() == "}":
        stream.advance(stream.pos + 1)
    else:
        while True:
            key, _, _ = stream.value()
            if not isinstance(key, str):
                raise stream.error()
            keys.add(key)
            stream.expect(":")
            handler = on_item.get(key)
            if stream.peek() == "[":
                stream.advance(stream.pos + 1)
                if stream.peek() == "]":
                    stream.advance(stream.pos + 1)
                else:
                    while True:
                        item, start, length = stream.value()
                        if handler is not None:
                            handler(item, start, length)
                        if stream.expect(",]") == "]":
                            break
            else:
                stream.value()
                if key in on_item:
                    raise UsageError(f"{stream.where}: '{key}' must be a list")
            if stream.expect(",}") == "}":
                break
    if stream.peek():
        raise stream.error()
    return keys


def read_coco_json(path: str, flag: str, *, images: bool = True) -> CocoJson:
    """Streams `path` once. `images=False` skips storing its images (another file lists them).

    Raises:
      UsageError: missing file, invalid JSON (with the line), no "images" list, or an image /
        annotation / category without its required fields.
    """
    where = f"--{flag} {path}"
    if not os.path.isfile(path):
        raise UsageError(f"{where} does not exist")
    out = CocoJson(path)
    categories: list[tuple[int, str]] = []

    def on_image(im: Any, start: int, length: int) -> None:
        out.images.append(
            (
                _hashable(field_of(im, "id", path, "image"), path),
                str(field_of(im, "file_name", path, "image")),
                int(field_of(im, "height", path, "image")),
                int(field_of(im, "width", path, "image")),
            )
        )

    def on_annotation(a: Any, start: int, length: int) -> None:
        image_id = _hashable(field_of(a, "image_id", path, "annotation"), path)
        cat = annotation_fields(a, path)[4]
        out.ann_image.append(out.image_codes.setdefault(image_id, len(out.image_codes)))
        out.ann_category.append(cat)
        out.ann_offset.append(start)
        out.ann_length.append(length)

    def on_category(c: Any, start: int, length: int) -> None:
        categories.append(
            (int(field_of(c, "id", path, "category")), str(field_of(c, "name", path, "category")))
        )

    handlers = {"annotations": on_annotation, "categories": on_category}
    handlers["images"] = on_image if images else (lambda *_: None)
    try:
        with open(path, "rb") as f:
            stream = _Stream(f, where)
            keys = _walk(stream, handlers)  # reads to the end of the file
            out.sha256 = stream.sha.hexdigest()
    except (TypeError, ValueError, OverflowError) as e:
        raise UsageError(f"{path}: malformed COCO annotation ({e})") from None
    if "images" not in keys:
        raise UsageError(f"{where}: expected a COCO JSON object with an 'images' list")
    out.has_annotations = "annotations" in keys
    out.categories = sorted(categories) if "categories" in keys else None
    return out


def _hashable(value: Any, path: str) -> Any:
    if isinstance(value, (dict, list)):
        raise UsageError(f"{path}: an image id must be a number or a string, got {value!r:.40}")
    return value
