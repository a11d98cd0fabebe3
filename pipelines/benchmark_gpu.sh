#!/usr/bin/env bash
# ResNet-50 224 px training images/s on one GPU with our input pipeline feeding it, bfloat16 with
# XLA off and on, next to the same step on in-memory tensors (the model's ceiling). Prints the JSON
# of pipelines/benchmark_training.py. Reference points: NVIDIA's published TensorFlow ResNet-50
# (A100, AMP + XLA) ~2,375 images/s; MLPerf Training H200 ~7.9k images/s per GPU; goal on one
# H200: >= 3,600 images/s. Not yet run: no GPU was lent to the session that wrote it.
#
#   bash pipelines/benchmark_gpu.sh [BATCH]     # default batch 256; about 5-10 minutes
set -euo pipefail
BATCH="${1:-256}"
PY="${PYTHON:-python}"
nvidia-smi --query-gpu=name,compute_cap,memory.total --format=csv,noheader || true
TF_CPP_MIN_LOG_LEVEL=2 "$PY" -m pipelines.benchmark_training --model=resnet50 \
  --image_sizes=224 --batch_size="$BATCH" --num_classes=1000 --warmup=10 --steps=50 \
  --steps_per_execution=10 \
  --variants=loop_bf16,loop_bf16_xla,tfrecord_bf16,tfrecord_bf16_xla
