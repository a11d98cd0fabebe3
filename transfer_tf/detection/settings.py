"""The `detection` config section (`transfer.task: detection`) and its value checks.

The home of the detection keys, in the task's folder as every task's settings (`ssl/settings.py`,
`segmentation/settings.py`); `config_schema` adds the section to `ExperimentConfig` and
`config._validate` raises the first `detection_problem` as a ConfigError. It imports nothing from
the package, so the config loader can import it without importing the detector (keras-cv).

The model is RetinaNet (Lin et al., 2017): 640 px inputs, anchors 3 scales x 3 aspect ratios of
base size 4 x stride on P3-P7, each box also positive on its best anchor, 4-conv heads with a 0.01
prior, NMS at IoU 0.5 keeping 100 detections above score 0.05, horizontal flips. How it is
TRAINED (label thresholds, focal loss, box loss, offset scaling, scale jitter, anchor clipping) is
`detection.recipe` (RECIPES below); a key set explicitly wins over its recipe's value.

Example:
    cfg = load_config("configs/coco_retinanet_resnet50.yaml")
    cfg.detection.recipe          # "model_garden"
    cfg.detection.focal_gamma     # 1.5 (the recipe's; --set=detection.focal_gamma=2 wins)
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The coarsest pyramid level is P7 (stride 2**7): inputs must divide into it so the anchors of
# every level line up with the feature maps the network produces.
LARGEST_STRIDE = 128

# `detection.recipe` -> the value of each key it sets (those the section leaves unset: null).
# Each value below was read from the named source code, not from a paper or a README.
RECIPES: dict[str, dict[str, object]] = {
    # Model Garden's RetinaNet-R50-FPN, `retinanet_resnetfpn_coco` (official/vision/configs/
    # retinanet.py): Parser match_threshold 0.5 / unmatched_threshold 0.5 (no ignored band),
    # Losses focal_loss_alpha 0.25, focal_loss_gamma 1.5, huber_loss_delta 0.1, box_loss_weight
    # 50 (tasks/retinanet.py build_losses: Huber SUM, model loss = class + 50 x box), targets by
    # AnchorLabeler's FasterRcnnBoxCoder() without scale factors (ops/anchor.py: unscaled offsets
    # (dy / ha, dx / wa, log(h / ha), log(w / wa))), anchors not clipped to the image
    # (Anchor._generate_boxes), aug_scale_min 0.8 / aug_scale_max 1.2.
    # Published: MODEL_GARDEN.md, RetinaNet R50-FPN 640x640, COCO val2017 box AP 34.3 at 12 epochs
    # (that row links no config; configs/coco_retinanet_resnet50.yaml takes this factory's values
    # at 12 epochs) and 36.8 at 72 epochs (the row that links retinanet_resnetfpn_coco). This
    # project has not reproduced either (no accelerator here).
    "model_garden": {
        "match_threshold": 0.5,
        "unmatched_threshold": 0.5,
        "focal_alpha": 0.25,
        "focal_gamma": 1.5,
        "box_loss": "huber",
        "box_loss_delta": 0.1,
        "box_loss_weight": 50.0,
        "box_variance": [1.0, 1.0, 1.0, 1.0],
        "clip_anchors": False,
        "scale_jitter": (0.8, 1.2),
    },
    # keras-cv 0.9's RetinaNet defaults: retinanet.LabelEncoder (positive 0.5, negative 0.4, the
    # anchors between ignored; box_variance 0.1, 0.1, 0.2, 0.2), losses.FocalLoss (alpha 0.25,
    # gamma 2), the "SmoothL1" box loss (SmoothL1Loss l1_cutoff 1.0, weight 1), the RetinaNet's
    # AnchorGenerator (clip_boxes=True) and JitteredResize's scale_factor (0.8, 1.25), which its
    # Pascal VOC RetinaNet example trains with (examples/training/object_detection/pascal_voc/
    # retina_net.py). The paper's thresholds and focal alpha/gamma.
    # Published: no COCO number. keras-cv's only stated figure for its RetinaNet is the
    # retinanet_resnet50_pascalvoc preset's "final MaP of 0.33" (Pascal VOC), whose training
    # settings it does not state. The project's generated-set measurements (BENCHMARKS.md) used
    # this recipe; it is the section's default.
    "keras_cv": {
        "match_threshold": 0.5,
        "unmatched_threshold": 0.4,
        "focal_alpha": 0.25,
        "focal_gamma": 2.0,
        "box_loss": "smooth_l1",
        "box_loss_delta": 1.0,
        "box_loss_weight": 1.0,
        "box_variance": [0.1, 0.1, 0.2, 0.2],
        "clip_anchors": True,
        "scale_jitter": (0.8, 1.25),
    },
}


@dataclass
class DetectionConfig:
    """RetinaNet detection on the ResNet's C3-C5 (used when `transfer.task: detection`).

    Keys left null (the default) take `recipe`'s value when the section is built; after that every
    key holds a value (a saved config lists them all)."""

    # Square model input: images are resized keeping their aspect ratio (long side = this) and
    # padded bottom/right. A multiple of 128. `data.image_size` is not used by detection.
    image_size: int = 640
    # Ground-truth boxes per image after padding (extra boxes are dropped; COCO images have <= 93).
    max_boxes: int = 100
    # The training recipe whose values the null keys below take (see RECIPES): model_garden
    # (Model Garden's retinanet_resnetfpn_coco, the one with a published COCO AP) or keras_cv.
    recipe: str = "keras_cv"
    # Anchors: base size `anchor_size * stride` on P3..P7 (32..512 px at 4.0), times
    # 2**(i / num_scales) for i < num_scales, for each aspect ratio (width / height).
    anchor_size: float = 4.0
    num_scales: int = 3
    aspect_ratios: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0])
    # Clip the anchors to the image (keras-cv's RetinaNet) or keep their full extent (Model
    # Garden's). Labels, box offsets and decoding all use the same anchors.
    clip_anchors: bool | None = None
    # Label assignment: IoU >= match_threshold positive, < unmatched_threshold background, the
    # anchors in between (none when the two are equal) are ignored by the loss.
    match_threshold: float | None = None
    unmatched_threshold: float | None = None
    # Also make each ground-truth box positive on its best-overlapping anchor whatever that IoU
    # (Model Garden's AnchorLabeler, force_match_for_each_col; keras-cv's LabelEncoder does not):
    # with 32 px anchors on P3 a box under ~22 px a side reaches IoU 0.5 with no anchor, and under
    # ~20 px IoU 0.4 with none, so by the thresholds alone it is trained as background. false: the
    # thresholds only. Not part of a recipe: true under both.
    force_match: bool = True
    # Conv layers (256 filters) of each head tower before its prediction layer, and the initial
    # foreground probability of the classification layer (bias -log((1 - p) / p)).
    head_convs: int = 4
    prior_probability: float = 0.01
    focal_alpha: float | None = None
    focal_gamma: float | None = None
    # Box targets: (centre shift / anchor size, log size ratio), each DIVIDED by these (y, x, h,
    # w): keras-cv's 0.1, 0.1, 0.2, 0.2 scale the offsets up 10x / 5x; 1, 1, 1, 1 leaves them
    # unscaled (Model Garden's box coder without scale factors).
    box_variance: list[float] | None = None
    # Box regression loss on those targets: huber or smooth_l1, quadratic below `box_loss_delta`,
    # averaged over the 4 offsets of an anchor and summed over positive anchors, weighted by
    # `box_loss_weight`. Both losses are normalised by the number of positive anchors.
    box_loss: str | None = None
    box_loss_delta: float | None = None
    box_loss_weight: float | None = None
    # Decoding: per-class NMS at this IoU over detections scoring at least score_threshold,
    # keeping the best max_detections per image.
    score_threshold: float = 0.05
    nms_iou: float = 0.5
    max_detections: int = 100
    # Training: resize by a factor drawn uniformly from this range (1 = the eval size), then a
    # random crop of image_size; [1, 1] turns jitter off. Flips follow data.random_flip.
    scale_jitter: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        # An unknown recipe resolves nothing: config._validate names it (CHOICES) before any
        # check reads a key.
        for key, value in RECIPES.get(self.recipe, {}).items():
            if getattr(self, key) is None:
                setattr(self, key, list(value) if isinstance(value, list) else value)


def detection_problem(cfg) -> str | None:
    """The one-line error naming the key when a detection value of the ExperimentConfig `cfg` is
    out of range, when a detection run (`transfer.task: detection`) sets a key detection does not
    read (naming the detection key that rules instead), or when another run sets a detection
    key (none reads the section); None when there is none. "Sets" = differs from its default."""
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
        (
            "box_variance",
            len(d.box_variance) == 4 and min(d.box_variance) > 0,
            "4 values > 0 (y, x, h, w)",
        ),
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
    if cfg.transfer.task == "detection" and cfg.data.schema != "coco":
        return (
            f"config keys 'transfer.task' (detection) and 'data.schema' ({cfg.data.schema!r}) "
            "conflict: detection trains on the coco schema (boxes)"
        )
    return None
