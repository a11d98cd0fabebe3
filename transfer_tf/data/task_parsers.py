"""Which parser and decoder read a TFRecord shard's records, by task (for `input.build_dataset`).

Classification (and SSL views): `parsers.Parser` over the schema's decoder. A dense task passes
its config section: detection's `DetectionParser` (COCO decoder), segmentation's
`SegmentationParser`, which brings its own decoder (instance masks or a semantic PNG).

Example:
    parser, decode = record_parser(cfg.data, cfg.segmentation, True, label_map, None)
    image, labels = parser(decode(serialized), seed)
"""

from __future__ import annotations

from collections.abc import Callable

from transfer_tf.config import DataConfig, DetectionConfig
from transfer_tf.data.decoders import make_decoder
from transfer_tf.data.detection import DetectionParser
from transfer_tf.data.label_maps import LabelMap
from transfer_tf.data.parsers import Parser, ViewsFn
from transfer_tf.data.segmentation import SegmentationParser
from transfer_tf.segmentation.settings import SegmentationConfig

TaskConfig = DetectionConfig | SegmentationConfig


def task_name(task_cfg: TaskConfig) -> str:
    """`detection` or `segmentation`: the `transfer.task` whose section `task_cfg` is."""
    return "segmentation" if isinstance(task_cfg, SegmentationConfig) else "detection"


def record_parser(
    data_cfg: DataConfig,
    task_cfg: TaskConfig | None,
    training: bool,
    label_map: LabelMap | None,
    views: ViewsFn | None,
) -> tuple[Callable, Callable]:
    """(parser, decode): `decode(serialized)` -> tensors, `parser(tensors, seed)` -> model
    inputs. `task_cfg` None: classification (or two views with `views`)."""
    if isinstance(task_cfg, SegmentationConfig):
        parser = SegmentationParser(data_cfg, task_cfg, training=training, label_map=label_map)
        return parser, parser.decoder.decode
    if task_cfg is not None:
        parser = DetectionParser(data_cfg, task_cfg, training=training, label_map=label_map)
    else:
        parser = Parser(
            data_cfg,
            training=training,
            label_map=label_map,
            jpeg_only=data_cfg.jpeg_only,
            views=views,
        )
    return parser, make_decoder(data_cfg.schema).decode
