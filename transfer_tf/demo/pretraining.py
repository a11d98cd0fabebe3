"""The demo's pretraining method (`demo.pretraining`): supervised, or SimCLR / BYOL on the
ImageNet-like images with their labels ignored (issue 17).

Example:
    if self_supervised(cfg):
        cfg = ssl_recipe(cfg)          # ssl.method set, LARS, small heads, kNN eval at the end
"""

from __future__ import annotations

from transfer_tf.config import ExperimentConfig, config_from_dict, to_dict

# A self-supervised demo step is this many times a supervised one (two views through the
# backbone, the heads; BYOL's target forward too): the time budget sizes pretraining with it.
# SimCLR measured 1.6-2.0x on ResNet-18 at 32 px (BENCHMARKS.md); rounded up, not measured
# on the demo's ResNet-50.
SSL_STEP_FACTOR = {"supervised": 1.0, "simclr": 2.5, "byol": 3.0}


def self_supervised(cfg: ExperimentConfig) -> bool:
    """Whether the demo pretrains without labels (`demo.pretraining: simclr | byol`)."""
    return cfg.demo.pretraining != "supervised"


def pretrain_title(cfg: ExperimentConfig) -> str:
    """The pretraining stage's title: says which pretraining the demo runs."""
    if not self_supervised(cfg):
        return "Pretrain on the ImageNet-like set (supervised)"
    method = cfg.demo.pretraining
    return f"Pretrain on the ImageNet-like set ({method}, self-supervised: labels ignored)"


def ssl_recipe(cfg: ExperimentConfig) -> ExperimentConfig:
    """The demo's self-supervised pretraining: `cfg` with `ssl.method = demo.pretraining` and a
    small-data recipe (LARS at SimCLR's small-batch LR 0.075 x sqrt(batch), weight decay 1e-6,
    temperature 0.2, colour strength 0.5 as SimCLR's CIFAR runs, 512-wide heads). Its eval is
    the evaluate stage's kNN top-1 on the validation split (its classifier head is untrained, so
    it has no top-1); the in-loop kNN monitor is off so the demo does not pay for it twice.
    Validated like a loaded config."""
    data = to_dict(cfg)
    batch = cfg.train.global_batch_size
    data["train"].update(
        optimizer="lars",
        base_learning_rate=0.075 * batch**0.5 * 256 / batch,
        weight_decay=1e-6,
        eval_every_epochs=0,
    )
    method = cfg.demo.pretraining
    data["ssl"] = {"method": method, "color_strength": 0.5}
    # Each method's own keys only (the other's would be accepted and ignored: an error).
    if method == "byol":
        data["ssl"].update(
            projection_widths=[512, 128], predictor_widths=[512, 128], momentum_base=0.99
        )
    else:
        data["ssl"].update(projection_widths=[512, 512, 128], temperature=0.2)
    return config_from_dict(data)
