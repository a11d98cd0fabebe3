"""Raw image dumps -> sharded TFRecords (ImageNet, COCO, image folders).

Parallel (`WriteOptions.num_workers` processes), streaming (bounded memory), atomic (temp file,
then rename), resumable (finished shards are kept on a rerun), splittable across machines
(`task_index`/`num_tasks`), and never writes a record that `tf.io.decode_jpeg` cannot decode.

Example:
    from transfer_tf.data.builders import WriteOptions, build_imagenet
    manifest = build_imagenet("/data/ILSVRC2012", "/data/tfrecords",
                              options=WriteOptions(num_workers=8))
"""

from transfer_tf.data.builders.coco import build_coco
from transfer_tf.data.builders.folder import build_folder
from transfer_tf.data.builders.imagenet import build_imagenet
from transfer_tf.data.builders.sharded_writer import WriteOptions

__all__ = ["WriteOptions", "build_coco", "build_folder", "build_imagenet"]
