"""The `detection` config section (`transfer.task: detection`) and its value checks.

Kept beside `config_schema` (which adds the section to `ExperimentConfig`) so the detection keys
live in one place; `config._validate` raises the first `detection_problem` as a ConfigError.

Defaults are RetinaNet's (Lin et al., 2017) as Model Garden's `retinanet_resnetfpn_coco` builds it:
640 px inputs, anchors 3 scales x 3 aspect ratios of base size 4 x stride on P3-P7, IoU >= 0.5
positive / < 0.4 negative plus each box on its best anchor, focal loss alpha 0.25 gamma 2, 4-conv
heads with a 0.01 prior, NMS at IoU 0.5 keeping 100 detections above score 0.05, scale jitter
0.8-1.25 with horizontal flips.

Example:
    cfg = load_config("configs/coco_retinanet_resnet50.yaml")
    cfg.detection.image_size      # 640
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The coarsest pyramid level is P7 (stride 2**7): inputs must divide into it so the anchors of
# every level line up with the feature maps the network produces.
LARGEST_STRIDE = 128


@dataclass
class DetectionConfig:
    """RetinaNet detection on the ResNet's C3-C5 (used when `transfer.task: detection`)."""

    # Square model input: images are resized keeping their aspect ratio (long side = this) and
    # padded bottom/right. A multiple of 128. `data.image_size` is not used by detection.
    image_size: int = 640
    # Ground-truth boxes per image after padding (extra boxes are dropped; COCO images have <= 93).
    max_boxes: int = 100
    # Anchors: base size `anchor_size * stride` on P3..P7 (32..512 px at 4.0), times
    # 2**(i / num_scales) for i < num_scales, for each aspect ratio (width / height).
    anchor_size: float = 4.0
    num_scales: int = 3
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    # Label assignment: IoU >= match_threshold positive, < unmatched_threshold background, the
    # anchors in between are ignored by the loss.
    match_threshold: float = 0.5
    unmatched_threshold: float = 0.4
    # Also make each ground-truth box positive on its best-overlapping anchor whatever that IoU
    # (Model Garden's AnchorLabeler, Detectron's RetinaNet): with 32 px anchors on P3 a box under
    # ~22 px a side reaches IoU 0.5 with no anchor, and under ~20 px IoU 0.4 with none, so by the
    # thresholds alone it is trained as background. false: the thresholds only.
    force_match: bool = True
    # Conv layers (256 filters) of each head tower before its prediction layer, and the initial
    # foreground probability of the classification layer (bias -log((1 - p) / p)).
    head_convs: int = 4
    prior_probability: float = 0.01
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    # Box regression loss on the encoded offsets (centre / 0.1, log size / 0.2): huber or
    # smooth_l1, quadratic below `box_loss_delta`; summed loss weighted by `box_loss_weight`.
    # Both losses are normalised by the number of positive anchors.
    box_loss: str = "smooth_l1"
    box_loss_delta: float = 1.0
    box_loss_weight: float = 1.0
    # Decoding: per-class NMS at this IoU over detections scoring at least score_threshold,
    # keeping the best max_detections per image.
    score_threshold: float = 0.05
    nms_iou: float = 0.5
    max_detections: int = 100
    # Training: resize by a factor drawn uniformly from this range (1 = the eval size), then a
    # random crop of image_size; [1, 1] turns jitter off. Flips follow data.random_flip.
    scale_jitter: tuple[float, float] = (0.8, 1.25)


def detection_problem(cfg) -> str | None:
    """The one-line error naming the key when a detection value of the ExperimentConfig `cfg` is
    out of range, or when a detection run (`transfer.task: detection`) sets something detection
    cannot use; None when there is none."""
    d = cfg.detection
    checks = [
        (
            "image_size",
            d.image_size >= LARGEST_STRIDE and d.image_size % LARGEST_STRIDE == 0,
            "a positive multiple of 128 (the P7 stride)",
        ),
        ("max_boxes", d.max_boxes > 0, "a positive count"),
        ("anchor_size", d.anchor_size > 0, "> 0"),
        ("num_scales", d.num_scales >= 1, ">= 1"),
        (
            "aspect_ratios",
            bool(d.aspect_ratios) and min(d.aspect_ratios) > 0,
            "a non-empty list of ratios > 0",
        ),
        ("match_threshold", 0 < d.match_threshold <= 1, "in (0, 1]"),
        (
            "unmatched_threshold",
            0 < d.unmatched_threshold <= d.match_threshold,
            "in (0, detection.match_threshold]",
        ),
        ("head_convs", d.head_convs >= 0, ">= 0"),
        ("prior_probability", 0 < d.prior_probability < 1, "in (0, 1)"),
        ("focal_alpha", 0 <= d.focal_alpha <= 1, "in [0, 1]"),
        ("focal_gamma", d.focal_gamma >= 0, ">= 0"),
        ("box_loss_delta", d.box_loss_delta > 0, "> 0"),
        ("box_loss_weight", d.box_loss_weight >= 0, ">= 0"),
        ("score_threshold", 0 <= d.score_threshold < 1, "in [0, 1)"),
        ("nms_iou", 0 < d.nms_iou <= 1, "in (0, 1]"),
        ("max_detections", d.max_detections > 0, "a positive count"),
        (
            "scale_jitter",
            0 < d.scale_jitter[0] <= d.scale_jitter[1],
            "[min, max] with 0 < min <= max",
        ),
    ]
    # keras-cv's SmoothL1Loss is |d| - 0.5 above its cutoff whatever the cutoff: continuous at 1.
    checks.append(
        (
            "box_loss_delta",
            d.box_loss == "huber" or d.box_loss_delta == 1.0,
            "1.0 with box_loss smooth_l1 (use box_loss huber for another delta)",
        )
    )
    for key, ok, expected in checks:
        if not ok:
            value = getattr(d, key)
            value = list(value) if isinstance(value, (list, tuple)) else value
            return f"config key 'detection.{key}': expected {expected}, got {value!r}"
    if cfg.transfer.task != "detection":
        return None
    if cfg.data.schema != "coco":
        return (
            f"config keys 'transfer.task' (detection) and 'data.schema' ({cfg.data.schema!r}) "
            "conflict: detection trains on the coco schema (boxes)"
        )
    unsupported = {
        "data.mixup_alpha": cfg.data.mixup_alpha > 0,
        "data.cutmix_alpha": cfg.data.cutmix_alpha > 0,
        "data.augment_policy": cfg.data.augment_policy != "none",
        "transfer.head_init": cfg.transfer.head_init != "default",
        "transfer.head_prior": cfg.transfer.head_prior > 0,
        "transfer.preset": cfg.transfer.preset == "bit_hyperrule",
    }
    for key, bad in unsupported.items():
        if bad:
            return (
                f"config keys '{key}' and 'transfer.task' (detection) conflict: detection does "
                f"not use {key} (the RetinaNet heads set their own prior: "
                "detection.prior_probability)"
            )
    return None
