"""COCO builder benchmark helpers: the generated JSON is valid COCO, records and memory count."""

from __future__ import annotations

import json
import subprocess
import sys

import psutil
import tensorflow as tf

from transfer_tf.benchmarks import coco_builder as benchmark_coco
from transfer_tf.data.builders.coco_plan import plan_coco


def test_generated_json_plans_and_builds_like_train2017_in_miniature(tmp_path):
    root = str(tmp_path / "coco")
    info = benchmark_coco.generate_coco(root, scale=1e-4)
    assert info == {"images": 12, "annotations": 86, "json_mb": info["json_mb"]} | {
        "image_size": "32x32",
        "distinct_jpegs": 1,
    }
    data = json.load(open(f"{root}/instances.json"))
    assert len(data["categories"]) == 80 and len(data["annotations"]) == 86
    polygons = [a["segmentation"][0] for a in data["annotations"] if not a["iscrowd"]]
    assert polygons and min(len(p) for p in polygons) >= 48  # ~30 points, like COCO's
    plan = plan_coco([f"{root}/images"], f"{root}/instances.json", str(tmp_path / "o" / "t"))
    refs = sum(len(i["annotations"]) for s in plan.specs for i in s.items)
    assert plan.counters["images_planned"] == 12 and refs == 86
    assert benchmark_coco.generate_coco(root, scale=1e-4) == info  # cached, not regenerated


def test_count_records_and_tree_memory(tmp_path):
    path = str(tmp_path / "x.tfrecord")
    with tf.io.TFRecordWriter(path) as w:
        for n in (0, 5, 70_000):
            w.write(b"r" * n)
    assert benchmark_coco.count_records(str(tmp_path / "*.tfrecord")) == 3
    tree, rss_sum = benchmark_coco._tree_memory(psutil.Process())
    assert 0 < tree <= rss_sum + 1 and rss_sum >= psutil.Process().memory_info().rss // 2
    # A child that holds 200 MB of its own raises the tree figure by about that much.
    code = "import sys, time; b = bytearray(200 << 20); print(1, flush=True); time.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        child.stdout.readline()
        grown, _ = benchmark_coco._tree_memory(psutil.Process())
    finally:
        child.kill()
        child.wait()
    assert grown - tree > 150 << 20


def test_a_builder_that_logs_a_lot_does_not_block_the_measurement():
    # 1 MB on stderr: more than a pipe holds, so a parent that reads it only at exit would wait
    # forever (Model Garden's create_coco_tf_record logs every image).
    code = "import sys; sys.stderr.write('x' * (1 << 20) + '\\nlast line\\n'); sys.exit(3)"
    result = benchmark_coco.run_measured([sys.executable, "-c", code], env=None, every_s=0.02)
    assert result["exit_code"] == 3 and result["stderr_tail"] == ["last line"]
