"""Turns raw image files into bytes that are safe to write: a complete 3-channel RGB JPEG.

Real dumps hold CMYK JPEGs, PNGs saved as `.JPEG`, grayscale JPEGs, truncated and zero-byte files.
RGB JPEGs are kept byte for byte (no generation loss, and shards match the public tools'); anything
else that decodes is re-encoded to an RGB JPEG; anything that does not fully decode is rejected
with a reason, so no record can ever make `tf.io.decode_jpeg` fail downstream.

EXIF orientation: TensorFlow's decoders ignore it, so a phone photo whose pixels are stored
sideways (with a "rotate 90" tag) trains sideways. With `apply_exif_orientation` (the folder
builder: users' own photos) the pixels are turned upright (`PIL.ImageOps.exif_transpose`) and
re-encoded without the tag. The ImageNet and COCO builders keep the stored-pixel frame: the
public shards, Model Garden's tools and COCO's boxes and polygons all refer to the stored pixels.

Pure Pillow (no TensorFlow ops), so it is safe in forked worker processes.

Example:
    try:
        image = prepare_image(open(path, "rb").read())
    except BadImage as e:
        skipped.append((path, str(e)))
    else:
        image.jpeg, image.height, image.width, image.fixed  # bytes, int, int, "" or "CMYK JPEG"
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageFile, ImageOps

# A truncated file must raise, never load with grey filler: tf.io.decode_jpeg would reject it.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Decompression-bomb checks stay on (Pillow's default limit), but as errors, not warnings.
warnings.simplefilter("error", Image.DecompressionBombWarning)

REENCODE_QUALITY = 95
_JPEG_SOI = b"\xff\xd8"
_JPEG_EOI = b"\xff\xd9"
_EXIF_ORIENTATION = 0x0112  # 1 = upright; 2..8 = mirrored and/or rotated


class BadImage(Exception):
    """The file cannot become a decodable RGB JPEG; the message is the reason (one line)."""


@dataclass(frozen=True)
class PreparedImage:
    """A decodable 3-channel RGB JPEG.

    Attributes:
      jpeg: JPEG bytes; `tf.io.decode_jpeg(jpeg, channels=3)` gives uint8 [height, width, 3].
      height, width: pixels.
      fixed: "" if the source bytes were kept, else what was converted (e.g. "CMYK JPEG").
    """

    jpeg: bytes
    height: int
    width: int
    fixed: str = ""


def _describe(img: Image.Image) -> str:
    fmt = img.format or "unknown format"
    return f"{img.mode} {fmt}"


def _orientation(img: Image.Image) -> int:
    try:
        value = int(img.getexif().get(_EXIF_ORIENTATION, 1))
    except Exception:  # a malformed EXIF block is not worth rejecting the image for
        return 1
    return value if 2 <= value <= 8 else 1


def prepare_image(data: bytes, apply_exif_orientation: bool = False) -> PreparedImage:
    """Validates `data` (any Pillow-readable image) and returns it as an RGB JPEG.

    Args:
      apply_exif_orientation: turn the pixels as the EXIF orientation tag says (height and
        width swap for a 90-degree turn); the result carries no EXIF. False keeps the stored
        pixels (and the original bytes of an RGB JPEG).
    Raises:
      BadImage: empty, truncated, corrupt or unreadable data (the message says which).
    """
    if not data:
        raise BadImage("zero-byte file")
    try:
        img = Image.open(io.BytesIO(data))
        # load() decodes every pixel; with LOAD_TRUNCATED_IMAGES off a short file raises.
        img.load()
    except Exception as e:  # Pillow raises many types (OSError, SyntaxError, ValueError...)
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadImage(f"cannot decode image: {reason}") from None
    width, height = img.size
    if width <= 0 or height <= 0:
        raise BadImage(f"image has no pixels ({width}x{height})")
    orientation = _orientation(img) if apply_exif_orientation else 1
    if img.format == "JPEG" and img.mode == "RGB" and orientation == 1:
        # libjpeg can finish a scan that is missing its end-of-image marker; TensorFlow's decoder
        # then reports "Premature end of JPEG data". Require the marker (trailing padding allowed).
        end = data.rfind(_JPEG_EOI)
        if not data.startswith(_JPEG_SOI) or end < 0 or data[end + 2 :].strip(b"\x00") != b"":
            raise BadImage("truncated JPEG (no end-of-image marker)")
        return PreparedImage(data, height, width)
    fixed = _describe(img)
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)  # animated GIF/PNG: first frame, as tf.io.decode_image does
    if orientation != 1:
        img = ImageOps.exif_transpose(img)
        fixed += f" with EXIF orientation {orientation}"
        width, height = img.size
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        # Composite on white rather than on whatever colour the transparent pixels hold.
        rgba = img.convert("RGBA")
        rgb = Image.new("RGB", rgba.size, (255, 255, 255))
        rgb.paste(rgba, mask=rgba.getchannel("A"))
    else:
        rgb = img.convert("RGB")
    out = io.BytesIO()
    rgb.save(out, format="JPEG", quality=REENCODE_QUALITY)
    return PreparedImage(out.getvalue(), height, width, fixed)
