"""The typed schema of an experiment config: one dataclass per YAML section, and allowed values.
Loading, overrides and validation live in `transfer_tf.config`, which re-exports these classes;
a task's own section lives in its folder (`detection/settings.py`, `segmentation/settings.py`).

Example:
    cfg = ExperimentConfig(train=TrainConfig(epochs=2))
    cfg.data.task  # -> "single_label" (derived from data.schema)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transfer_tf.detection.settings import DetectionConfig
from transfer_tf.segmentation.settings import SEGMENTATION_CHOICES, SegmentationConfig


@dataclass
class DataConfig:
    """Where the data is and how it becomes model inputs."""

    # TFRecord file patterns (any TF filesystem path, comma-separated), or `tfds:NAME[/CONFIG]`.
    train_pattern: str = ""
    eval_pattern: str = ""
    tfds_data_dir: str = ""
    tfds_manual_dir: str = ""
    # TFRecord schema of the shards: `classification` (imagenet_to_gcs.py) or `coco`.
    schema: str = "classification"
    # `auto` (stored as 0): taken from the builders' manifest beside the shards, the COCO label
    # map or the TFDS ClassLabel; a number is checked against them (data/manifest.py).
    num_classes: int = 1000
    # Stored label minus this offset is the class index: public ImageNet shards are 1..1000 (1).
    label_offset: int = 1
    # COCO: JSON label map written by make_coco_tfrecords (category id -> contiguous index).
    label_map_file: str = ""
    # Human-readable class names, one per line, in class-index order (shipped with exports).
    label_names_file: str = ""
    num_train_examples: int = 0
    num_eval_examples: int = 0
    image_size: int = 224
    # Train augmentation.
    crop_area_range: tuple[float, float] = (0.08, 1.0)
    crop_aspect_range: tuple[float, float] = (0.75, 4.0 / 3.0)
    # COCO multi-label crops: a label is kept if this share of its box stays in the crop.
    min_object_covered: float = 0.5
    random_flip: bool = True
    # After the crop and flip, per image, from sub-seeds of the crop's seed (turning them on
    # changes no crop): a rotation by an angle drawn uniformly from +-this many degrees (0 = off;
    # reflected borders, as Keras' RandomRotation), then colour jitter with torchvision's
    # meaning: [brightness, contrast, saturation, hue], factors drawn from [1 - s, 1 + s] (hue:
    # a turn of up to +-s of the colour circle, s <= 0.5); 0 = that one off.
    random_rotation_degrees: float = 0.0
    color_jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    augment_policy: str = "none"  # none | randaugment | autoaugment
    randaugment_magnitude: float = 0.5
    randaugment_layers: int = 2
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    # Eval: center crop of this fraction of the short side, then resize.
    eval_crop_fraction: float = 0.875
    # tf.data knobs.
    shuffle_buffer: int = 10_000
    file_shuffle: bool = True
    cycle_length: int = 16
    # Parallel calls of the record map (also the interleave and batch): 0 = one more than the
    # schedulable CPU cores with tf.data autotuning OFF (its per-element bookkeeping cost ~7% of
    # throughput on 2 cores, BENCHMARKS.md); N > 0 = N, autotuning off; -1 = tf.data AUTOTUNE.
    num_parallel_calls: int = 0
    # Batches prefetched: -1 = 2 with fixed parallelism, AUTOTUNE with num_parallel_calls=-1.
    prefetch: int = -1
    # A record that cannot be read (broken TFRecord framing: bytes overwritten, a cut file) or
    # parsed/decoded: `error` stops the run with one line naming the shard, the record and its
    # byte offset; `skip` drops it (a broken shard: the rest of that shard, which cannot be read
    # past the break), logs each, and logs per shard how many records every epoch lost (the
    # bookkeeping costs ~10-25% input throughput). Replaces `skip_corrupt: true|false`.
    on_corrupt_record: str = "error"  # error | skip
    # TFRecord shards hold JPEG (our builders and the public TensorFlow tools write JPEG), so
    # training skips a per-image format check (~3% throughput); a PNG/GIF/BMP record is then bad
    # data. false: accept every format in shards. TFDS sources always accept every format.
    jpeg_only: bool = True
    # `grpc://HOST:PORT` of a tf.data service dispatcher; empty = preprocess in-process.
    tf_data_service: str = ""

    @property
    def task(self) -> str:
        """`single_label` (softmax) for the classification schema, `multilabel` (sigmoid) for COCO."""
        return "multilabel" if self.schema == "coco" else "single_label"


@dataclass
class ModelConfig:
    """Backbone and head."""

    name: str = "resnet50"  # resnet10 | resnet18 | resnet34 | resnet50 | resnet101 | resnet152
    # Bottleneck ResNets: `v1.5` strides in each stage's first 3x3 conv (Model Garden, torchvision;
    # ~+0.5% top-1), `v1` in its first 1x1 (keras.applications weights). Same variables, so restore
    # checks it. The default stays v1: run dirs written before this key were v1.
    resnet_variant: str = "v1"
    dropout: float = 0.0
    # true: each block's last BN gamma starts at 0 (Goyal et al.). Off as in Model Garden: in short
    # runs those gammas stay ~0.005 and the blocks never learn (BENCHMARKS.md, issue 29).
    zero_init_residual_gamma: bool = False
    # false: each replica normalises with its own batch statistics (Model Garden's default; BN
    # batch = global_batch_size / replicas). The moving statistics are averaged over replicas
    # whatever this says (ON_READ + MEAN variables): checkpoints, evaluation from them and exports
    # hold the replica mean, not the first replica's. true: batch statistics all-reduced every
    # step (one collective per BN layer), so every replica normalises with the global batch.
    sync_batchnorm: bool = False
    batchnorm_momentum: float = 0.9
    batchnorm_epsilon: float = 1e-5
    # Keras weights file to start the backbone from (e.g. the standard
    # resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5); empty = random init.
    init_weights: str = ""
    # Per-channel normalisation applied inside the model (inputs are uint8-range images).
    mean_rgb: tuple[float, float, float] = (123.675, 116.28, 103.53)
    stddev_rgb: tuple[float, float, float] = (58.395, 57.12, 57.375)
    # `standardize`: (rgb - mean_rgb) / stddev_rgb. `caffe`: RGB->BGR minus the ImageNet BGR mean,
    # unscaled: what the standard Keras ImageNet ResNet weights expect (use it with init_weights).
    input_preprocessing: str = "standardize"


@dataclass
class TrainConfig:
    """Optimisation and the training loop."""

    global_batch_size: int = 1024
    # The run's length (pretraining; also the budget of a transfer.preset). 0 = unset: a run
    # needs epochs or train_steps, never a silent default length.
    epochs: float = 0.0
    # If > 0, overrides epochs * num_train_examples / global_batch_size.
    train_steps: int = 0
    # sgd | lars | adam | adamw (Adam recipes: configs/*_adam.yaml, 1e-4 / 1e-5 per 256 images).
    optimizer: str = "sgd"
    momentum: float = 0.9
    nesterov: bool = False
    # Learning rate per 256 images (the LR at a global batch of 256), scaled to global_batch_size
    # B as every LR in a config (training/schedules.py:peak_learning_rate): x B/256 for sgd and
    # lars, x sqrt(B/256) for adam and adamw (square-root rule; adam/adamw pretraining scaled
    # linearly before issue 29).
    base_learning_rate: float = 0.1
    lr_schedule: str = "cosine"  # cosine | step | constant
    # Linear warmup; capped at the run's length (a 100-step run warms up over its 100 steps).
    warmup_epochs: float = 5.0
    step_decay_epochs: list[float] = field(default_factory=lambda: [30.0, 60.0, 80.0])
    step_decay_rate: float = 0.1
    # Kernels only. sgd/adam: L2 in the loss; lars: inside the trust ratio; adamw: decoupled,
    # multiplied by the LR. -1 = the optimizer's default (training/optimizers.DEFAULT_WEIGHT_DECAY).
    weight_decay: float = -1.0
    # Single-label: softmax targets y * (1 - e) + e / C. Multi-label (coco): sigmoid targets
    # y * (1 - e) + e / 2 (as keras.losses.BinaryCrossentropy).
    label_smoothing: float = 0.1
    # Pretraining weight EMA (evaluated and exported instead of the raw weights); 0 = none. Warm-up
    # decay min(ema_decay, (1 + t) / (10 + t)) at update t. Fine-tuning ignores it
    # (transfer.ema_decay).
    ema_decay: float = 0.0
    # bfloat16 | float16 | none, or `auto`: what the hardware computes natively (bfloat16 on
    # TPU, GPU compute capability >= 8.0 and CPUs with AMX-BF16/AVX512-BF16; float16 with loss
    # scaling on 7.x GPUs; float32 otherwise). The run logs its choice and model_dir/config.yaml
    # records the resolved value (transfer_tf/training/precision.py).
    mixed_precision: str = "none"
    # XLA-compile the train step: true | false, or `auto`: a measured probe (a few steps of this
    # model, batch and image size on synthetic tensors, XLA on/off x the precisions allowed)
    # picks the fastest, cached per machine in $XDG_CACHE_HOME/transfer_tf
    # (transfer_tf/training/autotune.py).
    xla: bool | str = False
    steps_per_execution: int = 1
    checkpoint_every_steps: int = 1000
    keep_checkpoints: int = 5
    eval_every_epochs: float = 1.0
    log_every_steps: int = 100
    strategy: str = "auto"  # auto | one_device | mirrored | multi_worker_mirrored | tpu
    tpu: str = ""
    # Warm start: a run dir or checkpoint prefix whose model weights seed a NEW run (ignored when
    # model_dir already has a checkpoint: resuming wins).
    init_checkpoint: str = ""
    # Also checkpoint the tf.data iterator (exact resume; saves the shuffle buffer, one replica).
    checkpoint_input: bool = False


@dataclass
class PhaseConfig:
    """One phase of the transfer schedule: what trains, for how long, at which learning rate."""

    name: str = ""
    # What trains: `head`, `stage4`, `stage3+` (stage3 and above), `all`, or a comma list.
    trainable: str = "head"
    epochs: float = 0.0
    steps: int = 0
    # Learning rate per 256 images, as train.base_learning_rate: the phase trains at x B/256 of it
    # for sgd, x sqrt(B/256) for adam/adamw (B = train.global_batch_size; transfer/phases.py logs
    # and schedule.json records the effective value). Was the absolute `learning_rate`.
    base_learning_rate: float = 0.01
    # cosine (to 0 at the phase end) | constant | step (x0.1 at each of decay_fractions).
    lr_schedule: str = "cosine"
    # Linear warmup from the phase start, in steps or in epochs of data.num_train_examples (set at
    # most one; epochs keep a recipe's warmup the same share of a small and a large dataset).
    warmup_steps: int = 0
    warmup_epochs: float = 0.0
    # lr_schedule step: the LR drops x0.1 at each of these fractions of the phase.
    decay_fractions: list[float] = field(default_factory=lambda: [0.3, 0.6, 0.9])
    # Optional per-stage multipliers of the phase learning rate, e.g. {stage3: 0.1}; multiplied
    # with transfer.layer_decay's.
    lr_multipliers: dict[str, float] = field(default_factory=dict)
    # How frozen BatchNorm layers behave: `inference` (use moving stats, do not update) or `train`.
    frozen_batchnorm: str = "inference"


@dataclass
class TransferConfig:
    """Fine-tuning: task type, head, and the freeze/unfreeze schedule."""

    # `classification` (a new dense head; single- or multi-label from data.schema), `detection`
    # (RetinaNet, the `detection` section) or `segmentation` (the `segmentation` section).
    task: str = "classification"
    # A named preset (linear_probe | lp_ft | gradual_unfreeze | bit_hyperrule) used INSTEAD of
    # `phases`: setting both is an error (a config with phases takes a preset with
    # `--set=transfer.phases=[]`, or finetune's --preset flag, which does that). Its budget is
    # train.train_steps or train.epochs (one must be set; bit_hyperrule: optional, its rule picks
    # the length from data.num_train_examples); see transfer_tf/transfer/schedule.py.
    preset: str = ""
    # The pretrained backbone (finetune --init_checkpoint): a pretraining model_dir, a Keras
    # weights .h5 / .weights.h5, or an exported SavedModel. Empty = model.init_weights or scratch.
    init_checkpoint: str = ""
    # Presets: learning rate of the head-only phase per 256 images, scaled to the global batch as
    # a phase's base_learning_rate (x B/256 sgd, x sqrt(B/256) adam/adamw); later (unfrozen)
    # phases use it times `finetune_lr_factor`. Was the absolute `learning_rate`.
    base_learning_rate: float = 0.1
    finetune_lr_factor: float = 0.1
    phases: list[PhaseConfig] = field(default_factory=list)
    # sgd | adam | adamw; each phase starts with fresh optimizer slots and step count.
    optimizer: str = "sgd"
    momentum: float = 0.9
    # As train.weight_decay (-1 = the optimizer's default), for fine-tuning.
    weight_decay: float = -1.0
    # Fine-tuning weight EMA (0 = none); independent of the pretraining train.ema_decay.
    ema_decay: float = 0.0
    # As train.label_smoothing: softmax (single-label) or binary (multi-label) smoothing.
    label_smoothing: float = 0.0
    # Multi-label: weight on positive terms of the binary cross-entropy (1 = unweighted).
    pos_weight: float = 1.0
    threshold: float = 0.5
    # Layer-wise LR decay: stage4 trains at the phase LR x d, stage3 x d^2, ... stem x d^5 (the
    # head at x1); multiplied with a phase's lr_multipliers. Applied to the LEARNING RATE (the
    # whole update), so it means the same under sgd, adam and adamw. 1 = off.
    layer_decay: float = 1.0
    # Initial weights of the new head: `default` (glorot kernel, zero bias) or `zero` (kernel and
    # bias zero, BiT's: the first updates start from a neutral classifier). bit_hyperrule: zero.
    head_init: str = "default"
    # Multi-label (sigmoid) heads: initial bias -log((1 - p) / p) so every class starts at
    # probability p (e.g. 0.01, RetinaNet's prior); 0 = off (bias 0, i.e. p = 0.5).
    head_prior: float = 0.0


@dataclass
class ExportConfig:
    """SavedModel export."""

    top_k: int = 5
    # `auto` derives softmax/sigmoid from the task.
    output_activation: str = "auto"  # auto | softmax | sigmoid
    # The serving signatures refuse an image of more pixels (width x height, from its header,
    # before decoding): InvalidArgumentError, one line from predict. Default: Pillow's bomb
    # threshold, where the builders reject images (a PNG there costs ~1.3 GB). 0 = no limit.
    max_image_pixels: int = 89_478_485


@dataclass
class DemoConfig:
    """`make demo` (pipelines/demo.py): sizes of the generated data; ignored by other binaries."""

    # ImageNet-like set: data.num_classes classes (shape x colour), images per class.
    train_per_class: int = 60
    val_per_class: int = 10
    # Generated images' width and height are each drawn from [min, max] pixels.
    raw_image_size: tuple[int, int] = (48, 96)
    # COCO-like scenes composing the same vocabulary; one category per id (gaps as in COCO).
    coco_train_images: int = 240
    coco_val_images: int = 80
    coco_category_ids: list[int] = field(default_factory=lambda: [1, 3, 4, 7, 9, 13, 18, 22])
    objects_per_image: tuple[int, int] = (1, 3)
    coco_image_size: tuple[int, int] = (64, 112)
    # TFRecord builders.
    train_shards: int = 4
    validation_shards: int = 2
    num_workers: int = 2
    # Fine-tuning from scratch at the same step budget: one `all` phase at this learning rate per
    # 256 images, scaled as a phase's base_learning_rate (0 = the largest base_learning_rate of
    # transfer.phases). Was the absolute `scratch_learning_rate`.
    scratch_base_learning_rate: float = 0.0
    # Wall-clock target of the whole demo in seconds: after building the TFRecords the demo
    # measures the pretraining step (the XLA probe, transfer_tf/demo/budget.py) and trains fewer
    # pretraining epochs (never more than train.epochs) when the configured ones would not fit;
    # the report says what it chose. 0 = train exactly the configured epochs.
    time_budget_s: float = 0.0
    # How the backbone is pretrained on the ImageNet-like set: `supervised` (its labels) or
    # `simclr` / `byol` (self-supervised, labels ignored: ssl.method, demo/plan.py's small-data
    # recipe); fine-tuning and the scratch baseline are the same either way.
    pretraining: str = "supervised"
    # Also run the detection / segmentation stage (demo/detection.py, demo/segmentation.py: from
    # pretrained vs scratch, AP50 / mIoU, one drawn image). Off by default: minutes more each.
    detection: bool = False
    segmentation: bool = False
    # Run the training/evaluate/export/predict stages inside the demo process (their binaries'
    # library calls; one TensorFlow start-up) or, if false, one `python -m pipelines.*` each.
    in_process: bool = True


@dataclass
class SSLConfig:
    """Self-supervised pretraining (pipelines/pretrain.py; transfer_tf/ssl). Fine-tuning ignores it.

    `method: simclr | byol` trains the classifier's backbone on two views per image with labels
    ignored (any classification or COCO shards); the checkpoint's `model` stays the classifier,
    with the method's heads (and BYOL's target network) beside it. Checks: ssl/settings.py.
    """

    method: str = "supervised"  # supervised | simclr | byol
    # SimCLR: NT-Xent temperature (0.1 at batch 4096, larger at small batches).
    temperature: float = 0.1
    # MLP widths after the pooled features; [] = the method's: SimCLR v2 2048-2048-128 (Dense-BN
    # -ReLU..., BN last), BYOL projector 4096-256. BYOL's predictor: predictor_widths, whose last
    # width must equal the projector's.
    projection_widths: list[int] = field(default_factory=list)
    predictor_widths: list[int] = field(default_factory=lambda: [4096, 256])
    # BYOL target momentum: base -> 1 along a half cosine over the run (0.99 for short runs).
    momentum_base: float = 0.996
    # View recipe: `auto` (the method's), `simclr` (jitter p 0.8, grey 0.2, blur 0.5 both views)
    # or `byol` (weaker jitter, blur 1.0/0.1, solarize 0/0.2). Crop area/aspect and flip are
    # data.crop_area_range / crop_aspect_range / random_flip.
    views: str = "auto"
    # Colour jitter strength s: SimCLR's (0.8s, 0.8s, 0.8s, 0.2s); scales BYOL's (0.4, 0.4, 0.2, 0.1).
    color_strength: float = 1.0
    # What the jitter ops are: `paper` (the views recipe's own: SimCLR's tf.image per-channel
    # contrast and HSV saturation with multiplicative brightness; BYOL's the same with additive
    # brightness) or `torchvision` (data.color_jitter's blends toward grey: cheaper than HSV).
    jitter_ops: str = "paper"
    # Gaussian blur sigma range in pixels of a `blur_reference_size` view (the papers': 0.1-2.0 at
    # 224), scaled to data.image_size, so a blur covers the same share of the image at any size
    # (the kernel is 10% of the side either way). 0 = sigma in pixels of the view itself.
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    blur_reference_size: int = 224
    # Decode each image once and crop it twice, instead of two fused JPEG crop-decodes.
    decode_once: bool = False
    # Label-free monitoring: kNN top-1 (cosine, k neighbours, vote weights exp(s / T)) of the
    # eval split against a labeled train subset, every train.eval_every_epochs when
    # data.eval_pattern is set. 0 = off.
    knn_k: int = 20
    knn_temperature: float = 0.07
    # The labeled subset: the first knn_train_examples eval-preprocessed records of this pattern
    # (empty = data.train_pattern; point it at labeled shards when training on unlabeled ones).
    knn_train_pattern: str = ""
    knn_train_examples: int = 10_000


@dataclass
class ExperimentConfig:
    """The whole experiment: one YAML file."""

    name: str = "experiment"
    seed: int = 0
    # Deterministic ops and tf.data order (slower): for tests and debugging.
    deterministic: bool = False
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    detection: DetectionConfig = field(default_factory=DetectionConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)


# Values a field may take, checked after loading: "section.key" -> allowed values.
CHOICES: dict[str, tuple[str, ...]] = {
    "data.schema": ("classification", "coco"),
    "data.augment_policy": ("none", "randaugment", "autoaugment"),
    "data.on_corrupt_record": ("error", "skip"),
    "model.name": ("resnet10", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"),
    "model.input_preprocessing": ("standardize", "caffe"),
    "model.resnet_variant": ("v1", "v1.5"),
    "train.optimizer": ("sgd", "lars", "adam", "adamw"),
    "train.lr_schedule": ("cosine", "step", "constant"),
    "train.mixed_precision": ("auto", "bfloat16", "float16", "none"),
    "train.strategy": ("auto", "one_device", "mirrored", "multi_worker_mirrored", "tpu"),
    "transfer.preset": ("", "linear_probe", "lp_ft", "gradual_unfreeze", "bit_hyperrule"),
    "transfer.head_init": ("default", "zero"),
    "transfer.optimizer": ("sgd", "adam", "adamw"),
    "transfer.task": ("classification", "detection", "segmentation"),
    "detection.recipe": ("keras_cv", "model_garden"),  # before the keys it sets
    "detection.box_loss": ("huber", "smooth_l1"),
    **SEGMENTATION_CHOICES,  # segmentation/settings.py
    "export.output_activation": ("auto", "softmax", "sigmoid"),
    "phase.lr_schedule": ("cosine", "constant", "step"),
    "phase.frozen_batchnorm": ("inference", "train"),
    "demo.pretraining": ("supervised", "simclr", "byol"),
    "ssl.method": ("supervised", "simclr", "byol"),
    "ssl.views": ("auto", "simclr", "byol"),
    "ssl.jitter_ops": ("paper", "torchvision"),
}
