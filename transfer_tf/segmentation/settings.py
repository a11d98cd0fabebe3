"""The `segmentation` config section (`transfer.task: segmentation`) and its value checks.

The home of the segmentation keys, in the task's folder as every task's settings
(`detection/settings.py`, `ssl/settings.py`); `config_schema` adds the section to
`ExperimentConfig` and `config._validate` raises the first `segmentation_problem` as a
ConfigError. It imports nothing from the package, so the config loader can import it.

Classes of the class map (what the model predicts, `num_segmentation_classes`):
  layout instance_masks, classes all    0 = background, 1..K = the label map's classes (K =
                                        data.num_classes): K + 1 outputs
  layout instance_masks, classes voc21  0 = background, 1..20 = the PASCAL VOC classes in VOC
                                        order (torchvision's COCO-VOC subset); other COCO
                                        categories are background: 21 outputs
  layout semantic                       the PNG's values as they are (Model Garden's layout):
                                        data.num_classes outputs, background included if the
                                        dataset has one
255 is the ignore label everywhere (not a class; never predicted).

Example:
    cfg = load_config("configs/coco_semseg_resnet50.yaml")
    num_segmentation_classes(cfg)      # 81 on COCO (background + 80)
"""

from __future__ import annotations

from dataclasses import dataclass, field

IGNORE_LABEL = 255
# torchvision references/segmentation/coco_utils.py CAT_LIST: the COCO category id of each VOC
# class, in VOC order (0 = background).
VOC_COCO_IDS = (5, 2, 16, 9, 44, 6, 3, 17, 62, 21, 67, 18, 19, 4, 1, 64, 20, 63, 7, 72)
VOC_NAMES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
    "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)  # fmt: skip
# The feature-map side the reference ASPP rates belong to: DeepLabV3's 6/12/18 at output stride
# 16 on a 513 px crop (a 33 px map, ~32).
ASPP_REFERENCE_MAP = 32


# Values a segmentation key may take (config_schema.CHOICES includes them).
SEGMENTATION_CHOICES: dict[str, tuple[str, ...]] = {
    "segmentation.layout": ("instance_masks", "semantic"),
    "segmentation.classes": ("all", "voc21"),
    "segmentation.head": ("semantic_fpn", "deeplabv3plus"),
}


@dataclass
class SegmentationConfig:
    """Semantic segmentation on the ResNet's C2-C5 (used when `transfer.task: segmentation`)."""

    # Square model input: long side resized to this (x the train scale jitter), padded
    # bottom/right (image 0, labels 255). A multiple of 32 (the C5 stride).
    image_size: int = 512
    # Where labels come from: `instance_masks` (make_coco_tfrecords --include_masks: one PNG per
    # instance, data.schema coco) or `semantic` (Model Garden's image/segmentation/class/encoded,
    # one PNG class map per image, values 0..data.num_classes-1 and 255).
    layout: str = "instance_masks"
    # instance_masks: `all` (background + every label-map class) or `voc21` (the 20 VOC classes
    # + background, to compare with torchvision's COCO-VOC numbers).
    classes: str = "all"
    # `semantic_fpn` (Kirillov et al. 2019: FPN on C2-C5, each level upsampled to 1/4 and
    # summed) or `deeplabv3plus` (ASPP on C5 + a C2 decoder).
    head: str = "semantic_fpn"
    # Channels of the FPN / ASPP, and of the Semantic-FPN's per-level branches.
    fpn_channels: int = 256
    head_channels: int = 128
    # DeepLabV3+'s reference ASPP rates, scaled to the C5 map: rate r becomes
    # ceil(r x (image_size / 32) / 32) (6/12/18 -> 3/6/9 at 512 px, 1/2/3 at 128 px: dilations
    # wider than the map compute nothing but padding, and are ~10x slower on CPU).
    aspp_rates: list[int] = field(default_factory=lambda: [6, 12, 18])
    # Training: resize by a factor drawn uniformly from this range (1 = the eval size), random
    # crop of image_size; [1, 1] turns jitter off. Flips follow data.random_flip.
    scale_jitter: tuple[float, float] = (0.5, 2.0)
    # Evaluation compares class maps at the original image size; labels are carried padded to
    # this square (COCO's images are at most 640 px a side). A larger eval image is an error.
    max_eval_size: int = 640


def aspp_rates(seg_cfg: SegmentationConfig) -> list[int]:
    """The ASPP dilation rates for the C5 map of a `seg_cfg.image_size` input (see the key)."""
    side = seg_cfg.image_size // 32
    return [max(1, -(-r * side // ASPP_REFERENCE_MAP)) for r in seg_cfg.aspp_rates]


def num_segmentation_classes(cfg) -> int:
    """Outputs of the segmentation model of the ExperimentConfig `cfg` (see module doc)."""
    s = cfg.segmentation
    if s.layout == "semantic":
        return cfg.data.num_classes
    return len(VOC_NAMES) if s.classes == "voc21" else cfg.data.num_classes + 1


def segmentation_problem(cfg) -> str | None:
    """The one-line error naming the key when a segmentation value of `cfg` is out of range or
    conflicts with the data section, or a `segmentation.*` key is set (not its default) on a run
    that is not segmentation (none reads the section); None when there is none."""
    s = cfg.segmentation
    if cfg.transfer.task != "segmentation":
        default = SegmentationConfig()
        for name in default.__dataclass_fields__:
            if getattr(s, name) != getattr(default, name):
                value = getattr(s, name)
                value = list(value) if isinstance(value, (list, tuple)) else value
                return (
                    f"config keys 'segmentation.{name}' ({value!r}) and 'transfer.task' "
                    f"({cfg.transfer.task!r}) conflict: only transfer.task: segmentation reads "
                    "the segmentation section"
                )
        return None
    checks = [
        ("image_size", s.image_size >= 32 and s.image_size % 32 == 0, "a positive multiple of 32"),
        ("fpn_channels", s.fpn_channels > 0, "a positive count"),
        ("head_channels", s.head_channels > 0, "a positive count"),
        ("aspp_rates", bool(s.aspp_rates) and min(s.aspp_rates) > 0, "a list of rates > 0"),
        ("scale_jitter", 0 < s.scale_jitter[0] <= s.scale_jitter[1], "[min, max], 0 < min <= max"),
        ("max_eval_size", s.max_eval_size > 0, "a positive size"),
    ]
    for key, ok, expected in checks:
        if not ok:
            value = getattr(s, key)
            value = list(value) if isinstance(value, (list, tuple)) else value
            return f"config key 'segmentation.{key}': expected {expected}, got {value!r}"
    if s.layout == "instance_masks" and cfg.data.schema != "coco":
        return (
            f"config keys 'segmentation.layout' (instance_masks) and 'data.schema' "
            f"({cfg.data.schema!r}) conflict: instance masks are in coco shards (data.schema: coco)"
        )
    if s.layout == "semantic" and s.classes != "all":
        return (
            f"config keys 'segmentation.classes' ({s.classes!r}) and 'segmentation.layout' "
            "(semantic) conflict: a semantic PNG holds class indices, not COCO ids to subset"
        )
    unread = _unread_key(cfg)
    if unread:
        return unread
    if cfg.data.num_classes and num_segmentation_classes(cfg) > IGNORE_LABEL:
        return (
            f"config key 'data.num_classes': expected at most {IGNORE_LABEL - 1} classes for "
            f"segmentation (255 is the ignore label), got {cfg.data.num_classes}"
        )
    return None


# Keys a segmentation run does not read -> the `segmentation.*` key that rules instead.
_UNREAD = {
    "data.image_size": "image_size",
    "data.eval_crop_fraction": "image_size",
    "data.crop_area_range": "scale_jitter",
    "data.crop_aspect_range": "scale_jitter",
    "data.min_object_covered": "scale_jitter",
    "data.random_rotation_degrees": "scale_jitter",
    "data.color_jitter": "scale_jitter",
    "data.mixup_alpha": "scale_jitter",
    "data.cutmix_alpha": "scale_jitter",
    "data.augment_policy": "scale_jitter",
    "transfer.label_smoothing": "classes",
    "transfer.pos_weight": "classes",
    "transfer.threshold": "classes",
    "transfer.head_prior": "head",
    "transfer.head_init": "head",
    "model.dropout": "head",
    "export.top_k": "classes",
    "export.output_activation": "classes",
}


def _unread_key(cfg) -> str | None:
    """The error for the first key in _UNREAD that a segmentation `cfg` sets (not its default;
    `data.image_size` equal to segmentation.image_size is the same size said twice)."""
    for dotted, ruling in _UNREAD.items():
        section, key = dotted.split(".")
        value = getattr(getattr(cfg, section), key)
        if value == getattr(type(getattr(cfg, section))(), key):
            continue
        if dotted == "data.image_size" and value == cfg.segmentation.image_size:
            continue
        value = list(value) if isinstance(value, (list, tuple)) else value
        ruled = getattr(cfg.segmentation, ruling)
        ruled = list(ruled) if isinstance(ruled, (list, tuple)) else ruled
        return (
            f"config keys '{dotted}' ({value!r}) and 'transfer.task' (segmentation) conflict: a "
            f"segmentation run does not read {dotted}; 'segmentation.{ruling}' ({ruled!r}) rules "
            "instead"
        )
    if cfg.transfer.preset == "bit_hyperrule":
        return (
            "config keys 'transfer.preset' ('bit_hyperrule') and 'transfer.task' (segmentation) "
            "conflict: BiT-HyperRule's MixUp and zero head are a classifier's"
        )
    return None
