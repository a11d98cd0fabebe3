#!/usr/bin/env bash
# Train on a Cloud TPU VM: a single host (v3-8, v4-8, v5litepod-8) or a pod slice (v3-32, v4-32).
# Edit the two lines marked EDIT (or export TPU_NAME / BUCKET), then from a checkout:
#   deploy/tpu_vm/train.sh pretrain            # or: finetune
#   POD=1 deploy/tpu_vm/train.sh pretrain      # a pod slice (several hosts)
#   DRY_RUN=1 deploy/tpu_vm/train.sh pretrain  # print the gcloud commands, run nothing
# What it does:
#   1. copies this checkout to every host of the TPU (--worker=all) and installs it there with
#      TRANSFER_TF_KEEP_TENSORFLOW=1, so the TPU VM's own TensorFlow build stays;
#   2. starts the job on worker 0 in the background (log: ~/transfer_tf_<job>.log on worker 0).
#      Single host: --tpu=local. Pod slice: TensorFlow drives every host's TPU chips from worker 0
#      through the TPU name (TPU_LOAD_LIBRARY=0 keeps worker 0's process off the local chips).
# A preempted (spot) TPU loses nothing written: recreate it and rerun this script; the job resumes
# from the latest checkpoint in the bucket. Watch: the log, or TensorBoard on $BUCKET/runs/.
set -euo pipefail

TPU_NAME="${TPU_NAME:-my-tpu}"        # EDIT: your TPU VM or pod slice
BUCKET="${BUCKET:-gs://YOUR_BUCKET}"  # EDIT: bucket holding tfrecords/ (runs/ is written below it)
ZONE="${ZONE:-}"                      # empty: gcloud's configured compute/zone
JOB="${1:-}"

case "$JOB" in
  pretrain)
    ARGS=(--config=configs/imagenet_resnet50.yaml --strategy=tpu --mixed_precision=bfloat16
      "--model_dir=$BUCKET/runs/imagenet_r50_tpuvm"
      "--set=data.train_pattern=$BUCKET/tfrecords/imagenet/train-*"
      "--set=data.eval_pattern=$BUCKET/tfrecords/imagenet/validation-*"
      "--set=data.label_names_file=$BUCKET/tfrecords/imagenet/label_names.txt") ;;
  finetune)
    ARGS=(--config=configs/coco_multilabel_resnet50.yaml --set=train.strategy=tpu
      --set=train.mixed_precision=bfloat16
      "--init_checkpoint=$BUCKET/runs/imagenet_r50_tpuvm"
      "--model_dir=$BUCKET/runs/coco_r50_tpuvm"
      "--set=data.train_pattern=$BUCKET/tfrecords/coco/train-*"
      "--set=data.eval_pattern=$BUCKET/tfrecords/coco/val-*"
      "--set=data.label_map_file=$BUCKET/tfrecords/coco/label_map.json") ;;
  *)
    echo "error: usage: $0 pretrain|finetune (got '${JOB}')" >&2
    exit 2 ;;
esac

if [[ -n "${POD:-}" ]]; then
  ENV_PREFIX="TPU_NAME=$TPU_NAME TPU_LOAD_LIBRARY=0"
  ARGS+=("--set=train.tpu=$TPU_NAME")
else
  ENV_PREFIX=""
  ARGS+=(--set=train.tpu=local)
fi
ZONE_FLAG=()
[[ -n "$ZONE" ]] && ZONE_FLAG=(--zone="$ZONE")

run() {  # prints the command (DRY_RUN=1) or runs it
  if [[ -n "${DRY_RUN:-}" ]]; then printf '%q ' "$@"; echo; else "$@"; fi
}

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ARCHIVE="${TMPDIR:-/tmp}/transfer_tf.tar.gz"
run tar -czf "$ARCHIVE" -C "$REPO" setup.py pyproject.toml README.md transfer_tf pipelines configs
run gcloud compute tpus tpu-vm scp "$ARCHIVE" "$TPU_NAME:~/transfer_tf.tar.gz" --worker=all "${ZONE_FLAG[@]}"
run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --worker=all "${ZONE_FLAG[@]}" --command="mkdir -p ~/transfer_tf && tar -xzf ~/transfer_tf.tar.gz -C ~/transfer_tf && cd ~/transfer_tf && TRANSFER_TF_KEEP_TENSORFLOW=1 python3 -m pip install --quiet ."
TRAIN="cd ~/transfer_tf && $ENV_PREFIX nohup python3 -m pipelines $JOB $(printf '%q ' "${ARGS[@]}")> ~/transfer_tf_$JOB.log 2>&1 &"
run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --worker=0 "${ZONE_FLAG[@]}" --command="$TRAIN"
echo "started $JOB on $TPU_NAME; follow it with: gcloud compute tpus tpu-vm ssh $TPU_NAME --worker=0 ${ZONE_FLAG[*]} --command='tail -f ~/transfer_tf_$JOB.log'" >&2
