"""The training loop on in-memory data: learning, checkpoints, NaN stop, freezing, schedules."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from transfer_tf.config import ModelConfig, TrainConfig
from transfer_tf.errors import UsageError
from transfer_tf.metrics import TopKAccumulator
from transfer_tf.models.resnet import build_classifier, layers_by_stage
from transfer_tf.training import schedules
from transfer_tf.training.checkpoints import load_model
from transfer_tf.training.loop import Trainer, TrainingDivergedError
from transfer_tf.training.losses import sigmoid_cross_entropy, softmax_cross_entropy
from transfer_tf.training.optimizers import LARS, make_optimizer
from transfer_tf.training.strategy import make_strategy

# The init these loop tests were tuned with (zero-initialised block gammas, the default until
# issue 29): they test the loop, and at their LR the toy ResNet-10 is steadier with it.
_MODEL = ModelConfig(name="resnet10", zero_init_residual_gamma=True)


def _data(n=64, classes=4, size=32, seed=0):
    """Images whose class sets the brightness of one channel: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    images = rng.integers(0, 80, [n, size, size, 3]).astype("uint8")
    images[..., labels % 3] = 0
    images += (labels * 40).astype("uint8")[:, None, None, None]
    return images, np.eye(classes, dtype="float32")[labels]


def _trainer(tmp_path, **kw):
    strategy = make_strategy("one_device")
    keras.utils.set_random_seed(0)
    with strategy.scope():
        model = build_classifier(_MODEL, 4)
        optimizer = make_optimizer(TrainConfig(momentum=0.9))
    args = dict(
        global_batch_size=16,
        weight_decay=1e-4,
        steps_per_execution=4,
        checkpoint_every_steps=8,
        keep_checkpoints=2,
        log_every_steps=4,
    )
    args.update(kw)
    return Trainer(model, optimizer, strategy, str(tmp_path), **args)


def test_loop_learns_checkpoints_and_stops_on_nan(tmp_path):
    images, labels = _data()

    def train_fn(ctx):
        ds = tf.data.Dataset.from_tensor_slices((images, labels)).shuffle(64, seed=1).repeat()
        return ds.batch(ctx.get_per_replica_batch_size(16), drop_remainder=True)

    trainer = _trainer(tmp_path)
    assert trainer.restore() == 0
    seen = []

    class Record:
        def on_train_begin(self, *a):
            pass

        def on_eval_end(self, *a):
            pass

        def on_train_end(self, *a):
            pass

        def on_execution_end(self, step, logs):
            seen.append((step, logs["loss"]))

    trainer.hooks.append(Record())
    loss = softmax_cross_entropy()
    trainer.train(
        train_fn, end_step=16, lr_schedule=schedules.warmup_cosine(0.1, 4, 16), loss_fn=loss
    )
    steps = [s for s, _ in seen]
    assert steps == [4, 8, 12, 16]
    assert seen[-1][1] < 0.6 * seen[0][1], seen
    ckpts = tf.train.get_checkpoint_state(str(tmp_path / "checkpoints")).all_model_checkpoint_paths
    assert [p.rsplit("-", 1)[1] for p in ckpts] == ["8", "16"]  # keep_checkpoints=2

    # Frozen stages: weights and BN moving statistics stay put; the head moves.
    stages = layers_by_stage(trainer.model)
    for stage in ("stem", "stage1", "stage2", "stage3", "stage4"):
        for layer in stages[stage]:
            layer.trainable = False
    frozen = {
        v.path: v.numpy().copy() for s in ("stem", "stage4") for la in stages[s] for v in la.weights
    }
    head_before = trainer.model.get_layer("head_dense").kernel.numpy().copy()
    trainer.train(train_fn, end_step=20, lr_schedule=schedules.warmup_constant(0.1), loss_fn=loss)
    assert trainer.step == 20
    assert all(
        np.array_equal(v.numpy(), frozen[v.path])
        for s in ("stem", "stage4")
        for la in stages[s]
        for v in la.weights
    )
    assert not np.array_equal(head_before, trainer.model.get_layer("head_dense").kernel.numpy())
    for layer in trainer.model.layers:
        layer.trainable = True

    want = TopKAccumulator((1,))
    want.update(labels, trainer.model(images, training=False).numpy())

    # A NaN learning rate: the run stops, names the step, and saves nothing new.
    with pytest.raises(TrainingDivergedError, match="last good checkpoint: .*ckpt-20"):
        trainer.train(
            train_fn, end_step=30, lr_schedule=lambda step: tf.constant(float("nan")), loss_fn=loss
        )
    assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-20")

    # A fresh trainer on the same dir resumes at step 20 with the same weights.
    fresh = _trainer(tmp_path)
    assert fresh.restore() == 20
    acc = fresh.evaluate(
        lambda ctx: tf.data.Dataset.from_tensor_slices((images, labels)).batch(10),
        TopKAccumulator((1,)),
    )
    assert acc == want.result()


def test_schedules():
    lr = schedules.warmup_cosine(peak=1.0, warmup_steps=10, total_steps=110)
    values = [float(lr(tf.constant(s, tf.int64))) for s in (0, 5, 10, 60, 110, 200)]
    np.testing.assert_allclose(values, [0.0, 0.5, 1.0, 0.5, 0.0, 0.0], atol=1e-6)
    step = schedules.warmup_step_decay(1.0, 0, [30, 60], 0.1, start_step=100)
    values = [float(step(tf.constant(s, tf.int64))) for s in (100, 129, 130, 165)]
    np.testing.assert_allclose(values, [1.0, 1.0, 0.1, 0.01], rtol=1e-6)
    cfg = TrainConfig(global_batch_size=512, base_learning_rate=0.1, warmup_epochs=5)
    full = schedules.from_train_config(cfg, steps_per_epoch=100, total_steps=9000)
    assert float(full(tf.constant(500, tf.int64))) == pytest.approx(0.2)


def test_losses():
    logits = tf.constant([[2.0, -1.0, 0.5]])
    labels = tf.constant([[1.0, 0.0, 0.0]])
    p = tf.nn.softmax(logits)[0].numpy()
    smooth = softmax_cross_entropy(0.3)(labels, logits).numpy()[0]
    assert smooth == pytest.approx(
        -(0.8 * np.log(p[0]) + 0.1 * np.log(p[1]) + 0.1 * np.log(p[2])), rel=1e-5
    )
    bce = sigmoid_cross_entropy(pos_weight=2.0)(labels, logits).numpy()[0]
    s = 1 / (1 + np.exp(-logits.numpy()[0]))
    want = np.mean([-2 * np.log(s[0]), -np.log(1 - s[1]), -np.log(1 - s[2])])
    assert bce == pytest.approx(want, rel=1e-5)


def test_lars_scales_kernel_updates_by_trust_ratio():
    kernel = keras.Variable(np.full([2, 2], 3.0, "float32"), name="kernel")
    bias = keras.Variable(np.full([2], 3.0, "float32"), name="bias")
    opt = LARS(learning_rate=1.0, momentum=0.0, eta=0.01, weight_decay_rate=0.0)
    grads = [tf.fill([2, 2], 100.0), tf.fill([2], 100.0)]
    opt.apply_gradients(zip(grads, [kernel, bias], strict=True))
    # trust = 0.01 * ||w|| / ||g|| = 0.01 * 6 / 200 -> update 100 * 3e-4 = 0.03
    np.testing.assert_allclose(kernel.numpy(), 3.0 - 0.03, rtol=1e-5)
    np.testing.assert_allclose(bias.numpy(), 3.0 - 100.0, rtol=1e-5)


def test_load_model_rebuilds_run(tmp_path):
    from transfer_tf.config import ExperimentConfig, save_config

    cfg = ExperimentConfig()
    cfg.model = dataclasses.replace(cfg.model, name="resnet10")
    cfg.data.num_classes = 4
    trainer = _trainer(tmp_path)
    trainer.save()
    save_config(cfg, str(tmp_path / "config.yaml"))
    model, loaded = load_model(str(tmp_path))
    assert loaded.model.name == "resnet10"
    x = tf.random.uniform([2, 32, 32, 3], 0, 255)
    np.testing.assert_allclose(model(x).numpy(), trainer.model(x).numpy(), rtol=1e-5, atol=1e-5)


def test_evaluate_traces_the_model_once_across_passes(tmp_path):
    # Periodic in-training evals must reuse one compiled step: tracing a ResNet-50 takes seconds.
    images, labels = _data(n=20)
    trainer = _trainer(tmp_path)
    calls = []
    original = trainer.model.call

    def counting_call(*args, **kwargs):
        calls.append(1)  # Python side effect: runs once per trace, not per step
        return original(*args, **kwargs)

    trainer.model.call = counting_call
    # 8 + 8 + 4: the short last batch may add one (shape-generic) trace, never one per pass.
    dataset_fn = lambda ctx: tf.data.Dataset.from_tensor_slices((images, labels)).batch(8)  # noqa: E731
    first = trainer.evaluate(dataset_fn, TopKAccumulator((1,)))
    traces = len(calls)
    assert 1 <= traces <= 2
    for _ in range(2):
        assert trainer.evaluate(dataset_fn, TopKAccumulator((1,))) == first
    assert len(calls) == traces


def _ema_run(tmp_path, mixed_precision="none", ema_decay=0.999):
    """A tiny run with a weight EMA: per-step head kernels, the trainer, and its config."""
    from transfer_tf.config import ExperimentConfig, save_config
    from transfer_tf.training.precision import set_policy

    cfg = ExperimentConfig()
    cfg.model = dataclasses.replace(cfg.model, name="resnet10")
    cfg.data.num_classes = 4
    cfg.train = dataclasses.replace(
        cfg.train, mixed_precision=mixed_precision, ema_decay=ema_decay, momentum=0.9
    )
    images, labels = _data(n=16)
    set_policy(mixed_precision)
    try:
        strategy = make_strategy("one_device")
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = build_classifier(cfg.model, 4)
            optimizer = make_optimizer(cfg.train)
        trainer = Trainer(
            model,
            optimizer,
            strategy,
            str(tmp_path),
            global_batch_size=16,
            checkpoint_every_steps=100,
            log_every_steps=1,  # one step per execution: the hook sees every step's weights
            ema_decay=ema_decay,
        )
        head = model.get_layer("head_dense").kernel
        kernels = [head.numpy().copy()]

        class Record:
            def on_train_begin(self, *a):
                pass

            def on_eval_end(self, *a):
                pass

            def on_train_end(self, *a):
                pass

            def on_execution_end(self, step, logs):
                kernels.append(head.numpy().copy())

        trainer.hooks.append(Record())
        fn = lambda ctx: tf.data.Dataset.from_tensors((images, labels)).repeat()  # noqa: E731
        trainer.train(
            fn,
            end_step=3,
            lr_schedule=schedules.warmup_constant(0.1),
            loss_fn=softmax_cross_entropy(),
        )
        assert len(kernels) == 4
    finally:
        set_policy("none")
    save_config(cfg, str(tmp_path / "config.yaml"))
    return kernels, trainer


def test_ema_warms_up_and_load_model_returns_the_average(tmp_path):
    kernels, _ = _ema_run(tmp_path)
    # Model Garden's warm-up: the average starts at the weights before the first update, and
    # update t (from 0) uses decay min(d, (1 + t) / (10 + t)).
    want = kernels[0]
    for t, w in enumerate(kernels[1:]):
        d = min(0.999, (1 + t) / (10 + t))
        want = d * want + (1 - d) * w
    model, _ = load_model(str(tmp_path))
    got = model.get_layer("head_dense").kernel.numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert not np.allclose(got, kernels[-1])


def test_float16_ema_checkpoint_restores_the_averages(tmp_path):
    # The run trains under a LossScaleOptimizer; load_model (evaluate, export, fine-tune from a
    # run) rebuilds a float32 model without it and must still find the averages (not zeros).
    kernels, trainer = _ema_run(tmp_path, mixed_precision="float16", ema_decay=0.5)
    model, _ = load_model(str(tmp_path))
    got = model.get_layer("head_dense").kernel.numpy()
    assert np.max(np.abs(got)) > 1e-3
    want = kernels[0]
    for t, w in enumerate(kernels[1:]):
        d = min(0.5, (1 + t) / (10 + t))
        want = d * want + (1 - d) * w
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_restore_asserts_the_checkpoint_holds_what_the_run_expects(tmp_path):
    # A checkpoint without EMA averages restored by a trainer that keeps an EMA: an error naming
    # the checkpoint, not averages silently left at their initial values.
    trainer = _trainer(tmp_path)
    trainer.save()
    strategy = make_strategy("one_device")
    with strategy.scope():
        model = build_classifier(_MODEL, 4)
        optimizer = make_optimizer(TrainConfig(momentum=0.9))
    other = Trainer(model, optimizer, strategy, str(tmp_path), global_batch_size=16, ema_decay=0.9)
    with pytest.raises(UsageError, match=r"ckpt-0.*does not match"):
        other.restore()


def test_phases_and_resumes_continue_one_input_stream(tmp_path):
    from test_input_data import write_classification_shards

    from transfer_tf.config import DataConfig, ExperimentConfig
    from transfer_tf.data.dataset_fn import dataset_fn

    data = str(tmp_path / "data")
    write_classification_shards(data, 3, 4, label_offset=0, unique_labels=True)  # ids 0..11
    cfg = ExperimentConfig(
        seed=5,
        deterministic=True,
        data=DataConfig(
            train_pattern=f"{data}/train-*",
            num_classes=12,
            label_offset=0,
            image_size=16,
            shuffle_buffer=6,
            cycle_length=2,
        ),
        train=TrainConfig(global_batch_size=4),
    )
    train_fn = dataset_fn(cfg, "train")

    def run(model_dir, segments):
        """Trains through the end steps in `segments`; a new list starts a fresh Trainer (a
        killed and restarted process). Returns the source ids the train steps consumed."""
        seen = []

        def loss_fn(labels, logits):  # records exactly what each step trains on
            record = tf.py_function(lambda y: seen.extend(np.argmax(y, 1).tolist()), [labels], [])
            with tf.control_dependencies([record]):
                return softmax_cross_entropy()(labels, logits)

        for ends in segments:
            strategy = make_strategy("one_device")
            with strategy.scope():
                inputs = keras.Input([16, 16, 3])
                pooled = keras.layers.GlobalAveragePooling2D()(
                    keras.layers.Rescaling(1 / 255)(inputs)
                )
                model = keras.Model(inputs, keras.layers.Dense(12)(pooled))
                optimizer = make_optimizer(TrainConfig())
            trainer = Trainer(model, optimizer, strategy, str(model_dir), global_batch_size=4)
            trainer.restore()
            for end in ends:  # one train() call per phase
                trainer.train(
                    train_fn,
                    end_step=end,
                    lr_schedule=schedules.warmup_constant(0.01),
                    loss_fn=loss_fn,
                )
        return seen

    # 12 records, 4 per step: step 2 is mid-epoch 0, step 5 mid-epoch 1; 8 steps ~ 2.7 epochs.
    one_phase = run(tmp_path / "one", [[8]])
    assert run(tmp_path / "phases", [[2, 8]]) == one_phase
    assert run(tmp_path / "resumed", [[5], [8]]) == one_phase
    # Epochs are epochs: each record once in each.
    assert sorted(one_phase[:12]) == sorted(one_phase[12:24]) == list(range(12))
