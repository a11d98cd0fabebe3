"""COCO builder memory at train2017 scale, beside Model Garden's `create_coco_tf_record`.

Generates an instances JSON shaped like `instances_train2017.json` (118,287 images, 860,001
annotations, 80 categories with COCO's id gaps, ~30-point polygons and 1% crowd RLE, ~450 MB at
scale 1) over tiny images (one 32x32 JPEG hard-linked under every file name), then runs each
builder as its own process (`python -m ...`, as a user would) and samples the memory of that
process tree every 100 ms:
  * peak tree memory (`_tree_memory`): each resident page of the tree counted once, whoever else
    on the machine maps the same libraries; the headline figure;
  * peak RSS summed over the tree: the naive figure, which counts pages shared between a parent
    and its forked or forkserver children once per process.
Records written are counted from the TFRecord framing, without TensorFlow.

Example:
    result = run_benchmark("/tmp/bench_coco", scale=0.05, workers=(1, 2),
                           model_garden_dir="/tmp/mg/pkg")
    result["runs"][0]["peak_tree_mb"]
"""

from __future__ import annotations

import glob
import io
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import psutil

TRAIN2017_IMAGES = 118_287
TRAIN2017_ANNOTATIONS = 860_001
_SIDE = 32
# COCO's 80 category ids: 1..90 without the 10 that were never used.
_CATEGORY_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def _polygon_pool(rng: random.Random, n: int = 512) -> list[tuple[str, list[float]]]:
    """(JSON text of a segmentation, its [x, y, w, h] box) for n random ~30-point polygons."""
    import math

    out = []
    for _ in range(n):
        cx, cy = rng.uniform(10, 22), rng.uniform(10, 22)
        points = rng.randint(24, 36)
        xy = []
        for k in range(points):
            r = rng.uniform(3, 9)
            a = 2 * math.pi * k / points
            xy += [round(cx + r * math.cos(a), 2), round(cy + r * math.sin(a), 2)]
        xs, ys = xy[0::2], xy[1::2]
        box = [min(xs), min(ys), round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2)]
        out.append((json.dumps([xy]), box))
    return out


def _photo_like_jpegs(rng: random.Random, count: int, size: tuple[int, int]) -> list[bytes]:
    """`count` distinct photo-like JPEGs (smooth colour field, stripes, grain) of `size` (w, h):
    what a full decode costs on real photographs, unlike a flat tiny image."""
    import numpy as np
    from PIL import Image

    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32) / max(size)
    out = []
    for _ in range(count):
        g = np.random.default_rng(rng.randrange(2**31))
        coarse = g.uniform(0, 255, size=(6, 8, 3)).astype(np.uint8)
        field = np.asarray(
            Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC), np.float32
        )
        angle, freq = g.uniform(0, np.pi), g.uniform(4, 30)
        stripes = np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)))
        image = field + stripes[..., None] * g.uniform(-60, 60, 3) + g.normal(0, 8, field.shape)
        buf = io.BytesIO()
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=90)
        out.append(buf.getvalue())
    return out


def generate_coco(
    root: str, scale: float, seed: int = 0, image_size: tuple[int, int] = (_SIDE, _SIDE)
) -> dict[str, Any]:
    """Writes root/images/ and root/instances.json (kept across runs); returns its sizes.

    At the default 32x32 every image is one hard-linked flat JPEG (the annotation handling is
    measured); a larger `image_size` (width, height) links 100 distinct photo-like JPEGs of that
    size round-robin (JPEG decode and validation are measured too), with the polygons, boxes and
    crowd RLEs scaled to it.
    """
    marker = os.path.join(root, "generated.json")
    if os.path.exists(marker):
        with open(marker) as f:
            return json.load(f)
    from PIL import Image

    shutil.rmtree(root, ignore_errors=True)
    images_dir = os.path.join(root, "images")
    os.makedirs(images_dir)
    num_images = max(1, round(TRAIN2017_IMAGES * scale))
    num_annotations = max(1, round(TRAIN2017_ANNOTATIONS * scale))
    rng = random.Random(seed)
    width, height = image_size
    if image_size == (_SIDE, _SIDE):
        jpeg = io.BytesIO()
        Image.new("RGB", (_SIDE, _SIDE), (120, 80, 40)).save(jpeg, format="JPEG", quality=90)
        sources = [jpeg.getvalue()]
    else:
        sources = _photo_like_jpegs(rng, min(num_images, 100), image_size)
    names = [f"{100000 + i:012d}.jpg" for i in range(num_images)]
    for i, name in enumerate(names):
        k = i % len(sources)
        # A new source file every 50,000 links: filesystems cap the links to one (ext4: 65,000).
        source = os.path.join(root, f"source-{k}-{i // 50_000}.jpg")
        if not os.path.exists(source):
            with open(source, "wb") as f:
                f.write(sources[k])
        os.link(source, os.path.join(images_dir, name))
    sx, sy = width / _SIDE, height / _SIDE
    pool = [
        (
            json.dumps([[round(v * (sx if j % 2 == 0 else sy), 2) for j, v in enumerate(p)]]),
            [round(b[0] * sx, 2), round(b[1] * sy, 2), round(b[2] * sx, 2), round(b[3] * sy, 2)],
        )
        for p, b in ((json.loads(seg)[0], box) for seg, box in _polygon_pool(rng))
    ]
    path = os.path.join(root, "instances.json")
    with open(path, "w") as f:
        f.write('{"info": {"description": "generated train2017-scale"}, "licenses": [],\n')
        f.write('"images": [')
        f.write(
            ",\n".join(
                json.dumps({"id": 100000 + i, "file_name": n, "height": height, "width": width})
                for i, n in enumerate(names)
            )
        )
        f.write('],\n"annotations": [')
        lines = []
        for a in range(num_annotations):
            image_id = 100000 + rng.randrange(num_images)
            cat = rng.choice(_CATEGORY_IDS)
            if rng.random() < 0.01:  # crowd: uncompressed RLE, one run of ones in the middle
                area = width * height
                start = round(rng.randrange(200, 400) * area / 1024)
                ones = round(rng.randrange(50, 300) * area / 1024)
                seg = json.dumps(
                    {"size": [height, width], "counts": [start, ones, area - start - ones]}
                )
                box, crowd = [0.0, 0.0, float(width), float(height)], 1
            else:
                seg, box = pool[rng.randrange(len(pool))]
                crowd = 0
            lines.append(
                f'{{"segmentation": {seg}, "area": {round(box[2] * box[3] * 0.7, 2)}, '
                f'"iscrowd": {crowd}, "image_id": {image_id}, "bbox": {json.dumps(box)}, '
                f'"category_id": {cat}, "id": {a + 1}}}'
            )
            if len(lines) == 10_000:
                f.write(",\n".join(lines) + (",\n" if a + 1 < num_annotations else ""))
                lines = []
        f.write(",\n".join(lines))
        f.write('],\n"categories": [')
        f.write(", ".join(json.dumps({"id": c, "name": f"class{c}"}) for c in _CATEGORY_IDS))
        f.write("]}\n")
    info = {
        "images": num_images,
        "image_size": f"{width}x{height}",
        "distinct_jpegs": len(sources),
        "annotations": num_annotations,
        "json_mb": round(os.path.getsize(path) / 2**20, 1),
    }
    with open(marker, "w") as f:
        json.dump(info, f)
    return info


def _rollup(pid: int) -> dict[str, int]:
    """/proc/PID/smaps_rollup in bytes (Linux 4.14+)."""
    out = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                out[parts[0].rstrip(":")] = int(parts[1]) * 1024
    return out


def _tree_memory(proc: psutil.Process) -> tuple[int, int]:
    """(tree memory, sum of RSS) over `proc` and its descendants, in bytes.

    Tree memory = anonymous PSS summed over the tree + the largest file-backed RSS of any member.
    Anonymous pages are shared only by fork within the tree, so their PSS sum counts each page
    once; file pages (libtensorflow, Python's libraries) are mapped alike by every member, so the
    largest member's count stands for the tree. Plain PSS would also split those file pages with
    unrelated processes of the machine (other jobs importing TensorFlow), and plain RSS counts
    them once per member.
    """
    anon = file_max = rss = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            r = _rollup(p.pid)
        except OSError:
            continue
        anon += r.get("Pss_Anon", r.get("Anonymous", 0))
        file_max = max(file_max, r["Rss"] - r.get("Anonymous", 0))
        rss += r["Rss"]
    return anon + file_max, rss


def run_measured(cmd: Sequence[str], env: dict[str, str], every_s: float = 0.1) -> dict[str, Any]:
    """Runs `cmd`; returns wall seconds, exit code, the tree's peak memory and RSS sum (MiB)."""
    start = time.perf_counter()
    # stderr goes to a file, not a pipe: a builder that logs every image (Model Garden's does)
    # would fill a pipe that nobody reads until it exits, and block on it forever.
    err_file = tempfile.TemporaryFile()
    with open(os.devnull, "w") as null:
        child = subprocess.Popen(list(cmd), env=env, stdout=null, stderr=err_file)
    proc = psutil.Process(child.pid)
    peak_tree = peak_rss = 0
    while child.poll() is None:
        try:
            tree, rss = _tree_memory(proc)
        except psutil.Error:
            tree = rss = 0
        peak_tree, peak_rss = max(peak_tree, tree), max(peak_rss, rss)
        time.sleep(every_s)
    err_file.seek(0)
    stderr = err_file.read().decode(errors="replace")
    err_file.close()
    return {
        "wall_s": round(time.perf_counter() - start, 1),
        "exit_code": child.returncode,
        "peak_tree_mb": round(peak_tree / 2**20, 1),
        "peak_rss_sum_mb": round(peak_rss / 2**20, 1),
        "stderr_tail": stderr.strip().splitlines()[-1:] if child.returncode else [],
    }


def count_records(pattern: str) -> int:
    """Records in the TFRecord files matching `pattern` (walks the length framing)."""
    n = 0
    for path in glob.glob(pattern):
        with open(path, "rb") as f:
            while header := f.read(12):
                (length,) = struct.unpack("<Q", header[:8])
                f.seek(length + 4, os.SEEK_CUR)
                n += 1
    return n


def run_benchmark(
    work_dir: str,
    scale: float = 1.0,
    workers: Sequence[int | None] = (1, 2, 4),
    masks: Sequence[bool] = (False, True),
    model_garden_dir: str = "",
    model_garden_processes: Sequence[int | None] = (0,),
    num_shards: int = 32,
    image_size: tuple[int, int] = (_SIDE, _SIDE),
) -> dict[str, Any]:
    """Returns {"data": sizes, "runs": [...], "ratio_tree_...": {masks: ours max / MG min},
    "ratio_wall_...": {masks: MG's fastest wall / ours fastest}}.

    A None in `workers` / `model_garden_processes` runs that tool at its default (the flag left
    out: ours, the usable cores; Model Garden's, a pool of `os.cpu_count()` processes).
    """
    suffix = "" if image_size == (_SIDE, _SIDE) else f"_{image_size[0]}x{image_size[1]}"
    data_dir = os.path.join(work_dir, f"coco_scale_{scale:g}{suffix}")
    data = generate_coco(data_dir, scale, image_size=image_size)
    ann = os.path.join(data_dir, "instances.json")
    images = os.path.join(data_dir, "images")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    runs = []
    for with_masks in masks:
        jobs = [("transfer_tf", w) for w in workers]
        if model_garden_dir:
            jobs += [("model_garden", p) for p in model_garden_processes]
        for tool, n in jobs:
            # A folder per run: two benchmark processes may share --work_dir.
            tag = "default" if n is None else n
            out = os.path.join(work_dir, f"out-{tool}-{tag}-{int(with_masks)}-{os.getpid()}")
            shutil.rmtree(out, ignore_errors=True)
            os.makedirs(out)
            common = [
                f"--image_dir={images}",
                f"--object_annotations_file={ann}",
                f"--output_file_prefix={out}/train",
                f"--num_shards={num_shards}",
                f"--include_masks={str(with_masks).lower()}",
            ]
            if tool == "transfer_tf":
                cmd = [sys.executable, "-m", "pipelines.make_coco_tfrecords", *common]
                cmd += [] if n is None else [f"--num_workers={n}"]
                run_env = dict(env, PYTHONPATH=repo)
            else:
                cmd = [sys.executable, "-m", "official.vision.data.create_coco_tf_record"]
                cmd += [*common, *([] if n is None else [f"--num_processes={n}"])]
                run_env = dict(env, PYTHONPATH=model_garden_dir)
            result = run_measured(cmd, run_env)
            result.update(
                tool=tool,
                masks=with_masks,
                workers="default" if n is None else n,
                records=count_records(f"{out}/train-*.tfrecord"),
            )
            runs.append(result)
            print(json.dumps(result), file=sys.stderr, flush=True)
            shutil.rmtree(out, ignore_errors=True)
    ratio, wall = {}, {}
    for with_masks in masks:
        ok = [r for r in runs if r["masks"] == with_masks and r["exit_code"] == 0]
        ours_wall = [r["wall_s"] for r in ok if r["tool"] == "transfer_tf"]
        mg_wall = [r["wall_s"] for r in ok if r["tool"] == "model_garden"]
        if ours_wall and mg_wall:
            wall[f"masks={str(with_masks).lower()}"] = round(min(mg_wall) / min(ours_wall), 3)
        ours = [
            r["peak_tree_mb"]
            for r in runs
            if r["tool"] == "transfer_tf" and r["masks"] == with_masks
        ]
        mg = [
            r["peak_tree_mb"]
            for r in runs
            if r["tool"] == "model_garden" and r["masks"] == with_masks
        ]
        if ours and mg:
            ratio[f"masks={str(with_masks).lower()}"] = round(max(ours) / min(mg), 3)
    return {
        "benchmark": "coco_tfrecords",
        "data": data,
        "num_shards": num_shards,
        "runs": runs,
        "ratio_tree_ours_max_over_model_garden_min": ratio,
        "ratio_wall_model_garden_min_over_ours_min": wall,
        "cpus": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
    }
