"""An experiment's per-replica input function: what the trainer and the evaluator call.

`data.input.build_dataset` assembles one tf.data pipeline from a `DataConfig`; this adds what an
experiment knows besides (global batch, seed, determinism, the run's tf.data service job) and the
`tf.distribute.InputContext` signature strategies call.

Example:
    train_fn = dataset_fn(cfg, "train", run_id="runs/r50")
    dist = strategy.distribute_datasets_from_function(train_fn)
"""

from __future__ import annotations

from collections.abc import Callable

import tensorflow as tf

from transfer_tf.config import ExperimentConfig
from transfer_tf.data.parsers import ViewsFn
from transfer_tf.errors import UsageError

DatasetFn = Callable[[tf.distribute.InputContext], tf.data.Dataset]


def dataset_fn(
    cfg: ExperimentConfig, split: str, run_id: str = "", views: ViewsFn | None = None
) -> DatasetFn:
    """InputContext -> per-replica batches of `split` (`train`: shuffled, repeated; `eval`: one pass,
    fixed order), as `(images uint8 [b,S,S,3], labels float32 [b,C])`. The function takes an
    optional `start_step` (the Trainer passes its global step): the train stream starts there.
    `run_id` (the model_dir) names the run's tf.data service job (`input.service_job_name`).
    `views` (self-supervised pretraining): batches of two views per image, labels ignored
    (`input.build_dataset`).

    Raises:
      UsageError: the split's file pattern (`data.train_pattern` / `data.eval_pattern`) is empty.
    """
    from transfer_tf.data.input import build_dataset

    key = "train_pattern" if split == "train" else "eval_pattern"
    if not getattr(cfg.data, key):
        purpose = "train on" if split == "train" else "evaluate on"
        raise UsageError(f"config key 'data.{key}' is empty: nothing to {purpose}")

    def fn(ctx: tf.distribute.InputContext, start_step: int = 0) -> tf.data.Dataset:
        return build_dataset(
            cfg.data,
            split=split,
            global_batch_size=cfg.train.global_batch_size,
            seed=cfg.seed,
            deterministic=cfg.deterministic,
            input_context=ctx,
            run_id=run_id,
            start_step=start_step,
            views=views,
            detection={"detection": cfg.detection, "segmentation": cfg.segmentation}.get(
                cfg.transfer.task
            ),
        )

    return fn
