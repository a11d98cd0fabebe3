"""Image sizes from encoded headers, and the pixel limit of the serving graphs (on the TF graph).

A 10,000 x 10,000 photo is a 20 MB JPEG but 300 MB of pixels, and several times that once cropped
and cast to float for the resize: one such request could take a server down. The serving
signatures read the size from the header first (no decode) and refuse an image above
`export.max_image_pixels` with an `InvalidArgumentError` whose message names its size and the
limit (`pixel_limit_error`); predict reports that message in one line.

`header_hw` reads JPEG (`tf.io.extract_jpeg_shape`), PNG (IHDR), GIF (logical screen), BMP
(info header) and WebP (VP8, VP8L, VP8X) headers; a format it cannot read gives -1 and is checked
after decoding instead (`check_pixels` on the decoded shape).

Example:
    hw = header_hw(tf.io.read_file("huge.png"))        # int64 [2]: height, width
    with tf.control_dependencies([check_pixels(hw, 89_478_485)]):
        image = tf.io.decode_image(...)
"""

from __future__ import annotations

import tensorflow as tf

LIMIT_KEY = "export.max_image_pixels"
_PREFIX = 32  # header bytes read; every size field above lies in the first 30


def _prefix_bytes(image_bytes: tf.Tensor) -> tf.Tensor:
    """The first 32 bytes as int64 [32], zero-padded (short inputs index safely)."""
    head = tf.strings.substr(image_bytes, 0, _PREFIX)  # copies 32 bytes, never the image
    padded = tf.strings.join([head, tf.constant(b"\0" * _PREFIX)])
    raw = tf.io.decode_raw(tf.strings.substr(padded, 0, _PREFIX), tf.uint8)
    return tf.cast(tf.reshape(raw, [_PREFIX]), tf.int64)


def _u(b: tf.Tensor, offset: int, n: int, big_endian: bool) -> tf.Tensor:
    order = range(n) if big_endian else reversed(range(n))
    value = tf.constant(0, tf.int64)
    for i in order:
        value = value * 256 + b[offset + i]
    return value


def _starts(b: tf.Tensor, offset: int, magic: bytes) -> tf.Tensor:
    return tf.reduce_all(tf.stack([tf.equal(b[offset + i], c) for i, c in enumerate(magic)]))


def non_jpeg_hw(image_bytes: tf.Tensor) -> tf.Tensor:
    """(height, width) int64 [2] of a PNG/GIF/BMP/WebP from its header, else [-1, -1]."""
    b = _prefix_bytes(image_bytes)
    png = tf.stack([_u(b, 20, 4, True), _u(b, 16, 4, True)])
    gif = tf.stack([_u(b, 8, 2, False), _u(b, 6, 2, False)])
    # BMP: int32 fields; a negative height means rows stored top-down.
    bmp_h = _u(b, 22, 4, False)
    bmp_h = tf.where(bmp_h >= 2**31, 2**32 - bmp_h, bmp_h)
    bmp = tf.stack([bmp_h, _u(b, 18, 4, False)])
    vp8 = tf.stack([_u(b, 28, 2, False) % 16384, _u(b, 26, 2, False) % 16384])
    vp8l_w = 1 + b[21] + (b[22] % 64) * 256
    vp8l_h = 1 + b[22] // 64 + b[23] * 4 + (b[24] % 16) * 1024
    vp8l = tf.stack([vp8l_h, vp8l_w])
    vp8x = tf.stack([1 + _u(b, 27, 3, False), 1 + _u(b, 24, 3, False)])
    webp = tf.logical_and(_starts(b, 0, b"RIFF"), _starts(b, 8, b"WEBP"))
    cases = [
        (_starts(b, 0, b"\x89PNG"), png),
        (_starts(b, 0, b"GIF8"), gif),
        (_starts(b, 0, b"BM"), bmp),
        (tf.logical_and(webp, _starts(b, 12, b"VP8 ")), vp8),
        (tf.logical_and(webp, _starts(b, 12, b"VP8L")), vp8l),
        (tf.logical_and(webp, _starts(b, 12, b"VP8X")), vp8x),
    ]
    hw = tf.constant([-1, -1], tf.int64)
    for matches, value in reversed(cases):
        hw = tf.where(matches, value, hw)
    return hw


def header_hw(image_bytes: tf.Tensor) -> tf.Tensor:
    """(height, width) int64 [2] of an encoded image from its header alone; [-1, -1] when the
    format is none of JPEG/PNG/GIF/BMP/WebP (then only a decode can tell)."""
    return tf.cond(
        tf.io.is_jpeg(image_bytes),
        lambda: tf.cast(tf.io.extract_jpeg_shape(image_bytes)[:2], tf.int64),
        lambda: non_jpeg_hw(image_bytes),
    )


def check_pixels(hw: tf.Tensor, max_pixels: int) -> tf.Operation | None:
    """An assert op failing with `pixel_limit_error`'s message when height x width (`hw`, [2]
    or longer: decoded shapes work) exceeds `max_pixels`; None when `max_pixels` <= 0 (no limit).
    Run it (control dependency) before decoding."""
    if max_pixels <= 0:
        return None
    hw = tf.cast(hw[:2], tf.int64)
    pixels = hw[0] * hw[1]
    return tf.debugging.Assert(
        tf.less_equal(pixels, max_pixels),
        [
            tf.strings.format(
                "image is {}x{} pixels (width x height), above the limit of {} pixels "
                f"({LIMIT_KEY})",
                [hw[1], hw[0], tf.constant(max_pixels, tf.int64)],
            )
        ],
    )


def pixel_limit_error(message: str) -> str | None:
    """The reason in a serving error raised by `check_pixels` ("is WxH pixels (width x height),
    above the limit of N pixels (export.max_image_pixels)"), else None."""
    if LIMIT_KEY not in message or "image is " not in message:
        return None
    start = message.index("image is ") + len("image ")
    end = message.index(f"({LIMIT_KEY})", start) + len(LIMIT_KEY) + 2
    return message[start:end]
