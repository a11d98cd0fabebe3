"""ImageNet and folder builders: real raw layouts in, every record decoded and checked."""

from __future__ import annotations

import glob
import json
import os
import re

import pytest
import tensorflow as tf
from test_builders_rawdata import image_bytes, make_imagenet, write

from transfer_tf.data import schemas
from transfer_tf.data.builders import WriteOptions, build_folder, build_imagenet
from transfer_tf.errors import UsageError

WNIDS = ("n01440764", "n01443537", "n02102040")


def read_shards(pattern: str) -> list[dict]:
    """Every record of the matching shards (sorted file order), fully decoded."""
    out = []
    for path in sorted(glob.glob(pattern)):
        for rec in tf.data.TFRecordDataset(path):
            ex = tf.train.Example.FromString(rec.numpy()).features.feature
            image = tf.io.decode_jpeg(ex[schemas.ENCODED].bytes_list.value[0])
            out.append(
                {
                    "shard": os.path.basename(path),
                    "label": ex[schemas.CLASS_LABEL].int64_list.value[0],
                    "synset": ex[schemas.CLASS_SYNSET].bytes_list.value[0].decode(),
                    "filename": ex[schemas.FILENAME].bytes_list.value[0].decode(),
                    "shape": tuple(image.shape),
                    "hw": (
                        ex[schemas.HEIGHT].int64_list.value[0],
                        ex[schemas.WIDTH].int64_list.value[0],
                    ),
                    "text": [v.decode() for v in ex[schemas.CLASS_TEXT].bytes_list.value],
                }
            )
    return out


def test_imagenet_flat_csv_two_workers(tmp_path):
    raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
    expected = make_imagenet(raw, WNIDS, val_layout="flat_csv")
    names = tmp_path / "names.txt"
    names.write_text("".join(f"{w}\tname of {w}\n" for w in WNIDS))
    manifest_path = build_imagenet(
        raw,
        out,
        train_shards=3,
        validation_shards=2,
        synset_names_file=str(names),
        seed=7,
        options=WriteOptions(num_workers=2),
    )
    train = read_shards(f"{out}/train-*-of-00003")
    val = read_shards(f"{out}/validation-*-of-00002")
    good = {os.path.basename(p): w for p, w in expected["good"].items()}
    # Every good file exactly once, with the label of its wnid (1-based), decoding to RGB.
    written = {r["filename"]: r for r in train + val}
    assert len(written) == len(train) + len(val) == len(good)
    for name, wnid in good.items():
        r = written[name]
        assert r["synset"] == wnid and r["label"] == WNIDS.index(wnid) + 1
        assert r["text"] == [f"name of {wnid}"]
        assert r["shape"][2] == 3 and r["shape"][:2] == r["hw"]
    # Validation is in file-name order; training is shuffled (not in listing order).
    assert [r["filename"] for r in val] == sorted(r["filename"] for r in val)
    assert [r["filename"] for r in train] != sorted(r["filename"] for r in train)
    manifest = json.loads(open(manifest_path).read())
    assert manifest["complete"] and manifest["schema_version"] == schemas.SCHEMA_VERSION
    assert manifest["splits"]["train"]["records"] == len(train)
    assert sum(s["records"] for s in manifest["splits"]["validation"]["shards"]) == len(val)
    assert manifest["splits"]["validation"]["per_class"] == {w: 2 for w in WNIDS}
    assert sorted(s["file"] for s in manifest["skipped"]) == sorted(expected["bad"])
    assert sorted(c["file"] for c in manifest["converted"]) == sorted(expected["converted"])
    assert open(f"{out}/labels.txt").read().split() == list(WNIDS)
    assert open(f"{out}/label_names.txt").read().splitlines() == [f"name of {w}" for w in WNIDS]
    assert not glob.glob(f"{out}/.build/tmp/*")


@pytest.mark.parametrize("layout", ["folders", "flat_txt"])
def test_imagenet_validation_layouts_and_label_offset(tmp_path, layout):
    raw, out = str(tmp_path / "raw"), str(tmp_path / "out")
    expected = make_imagenet(raw, WNIDS, per_class=1, val_layout=layout)
    build_imagenet(raw, out, train_shards=1, validation_shards=1, label_offset=0)
    val = read_shards(f"{out}/validation-*")
    truth = {os.path.basename(p): w for p, w in expected["good"].items() if p.startswith("val/")}
    assert {r["filename"]: WNIDS[r["label"]] for r in val} == truth


def test_imagenet_bad_inputs_are_one_line_usage_errors(tmp_path):
    with pytest.raises(UsageError, match="not a directory"):
        build_imagenet(str(tmp_path / "missing"), str(tmp_path / "out"))
    raw = str(tmp_path / "raw")
    make_imagenet(raw, WNIDS, per_class=1, val_layout="flat_txt")
    os.remove(os.path.join(raw, "synset_labels.txt"))
    with pytest.raises(UsageError, match="validation_labels_file") as e:
        build_imagenet(raw, str(tmp_path / "out"))
    assert "\n" not in str(e.value)
    short = tmp_path / "short.txt"
    short.write_text(f"{WNIDS[0]}\n")
    with pytest.raises(UsageError, match="1 labels for 6 validation images"):
        build_imagenet(raw, str(tmp_path / "out"), validation_labels_file=str(short))
    with pytest.raises(UsageError, match="--task_index"):
        build_imagenet(raw, str(tmp_path / "out"), options=WriteOptions(task_index=2, num_tasks=2))


def test_folder_builder_with_validation_split(tmp_path):
    root, out = tmp_path / "photos", str(tmp_path / "out")
    fmts = {"cat": ("jpg", "JPEG"), "dog": ("png", "PNG"), "eel": ("bmp", "BMP")}
    for k, (c, (ext, fmt)) in enumerate(fmts.items()):
        for i in range(5):
            write(str(root / c / f"{c}{i}.{ext}"), image_bytes(10 * k + i, fmt=fmt))
    write(str(root / "cat" / "notes.txt"), b"not an image")
    manifest_path = build_folder(
        str(root), out, train_shards=2, validation_shards=1, validation_fraction=0.2
    )
    train, val = read_shards(f"{out}/train-*"), read_shards(f"{out}/validation-*")
    assert len(train) == 12 and len(val) == 3
    for r in train + val:
        assert r["synset"] == re.sub(r"\d+\.\w+$", "", r["filename"])
        assert r["label"] == sorted(fmts).index(r["synset"]) + 1
    assert {r["synset"] for r in val} == set(fmts)
    manifest = json.loads(open(manifest_path).read())
    assert manifest["ignored"] == ["cat/notes.txt"]
    assert len(manifest["converted"]) == 10  # the PNGs and BMPs became JPEGs


def _exif_jpeg(seed: int, orientation: int) -> bytes:
    """A 48x64 (h x w) JPEG whose EXIF says: rotate by `orientation` (6: 90 degrees clockwise)."""
    import io

    from PIL import Image

    img = Image.open(io.BytesIO(image_bytes(seed, (48, 64))))
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def test_folder_builder_applies_exif_orientation_imagenet_keeps_stored_pixels(tmp_path):
    import io

    import numpy as np
    from PIL import Image, ImageOps

    photo = _exif_jpeg(3, orientation=6)  # a phone photo taken in portrait
    upright = np.asarray(ImageOps.exif_transpose(Image.open(io.BytesIO(photo))))
    assert upright.shape == (64, 48, 3)
    root, out = tmp_path / "photos", str(tmp_path / "out")
    write(str(root / "cat" / "portrait.jpg"), photo)
    write(str(root / "dog" / "plain.jpg"), image_bytes(4, (48, 64)))
    manifest_path = build_folder(str(root), out, train_shards=1)
    records = {r["filename"]: r for r in read_shards(f"{out}/train-*")}
    # Training sees the photo the way a viewer shows it: 64 high, 48 wide, pixels turned.
    assert records["portrait.jpg"]["hw"] == (64, 48)
    assert records["portrait.jpg"]["shape"] == (64, 48, 3)
    assert records["plain.jpg"]["hw"] == (48, 64)
    (rec,) = [
        tf.train.Example.FromString(r.numpy()).features.feature
        for r in tf.data.TFRecordDataset(glob.glob(f"{out}/train-*"))
        if b"portrait" in r.numpy()
    ]
    pixels = tf.io.decode_jpeg(rec[schemas.ENCODED].bytes_list.value[0]).numpy()
    assert np.abs(pixels.astype(int) - upright.astype(int)).mean() < 3
    converted = json.loads(open(manifest_path).read())["converted"]
    assert [c["file"] for c in converted] == ["cat/portrait.jpg"], converted
    assert "EXIF orientation 6" in converted[0]["converted"], converted
    # ImageNet keeps the stored-pixel frame (the public shards and box annotations use it).
    raw = tmp_path / "raw"
    write(str(raw / "train" / WNIDS[0] / "a.JPEG"), photo)
    write(str(raw / "val" / WNIDS[0] / "ILSVRC2012_val_00000001.JPEG"), photo)
    build_imagenet(str(raw), str(tmp_path / "imagenet"), train_shards=1, validation_shards=1)
    (stored,) = read_shards(f"{tmp_path}/imagenet/train-*")
    assert stored["hw"] == (48, 64) and stored["shape"] == (48, 64, 3)
