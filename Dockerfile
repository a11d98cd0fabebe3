# transfer_tf in a container: every binary through one entry point.
#   docker build -t transfer-tf:cpu .
#   docker build -t transfer-tf:gpu --build-arg VARIANT=gpu .
#   docker build -t transfer-tf:tpu --build-arg VARIANT=tpu .
#   docker run --rm transfer-tf:cpu pretrain --config=configs/demo.yaml --model_dir=/tmp/r --dry_run
# cpu/gpu start from the TensorFlow image of the pinned version (setup.py); the TPU build of
# TensorFlow is not on those images, so tpu starts from Python and installs tensorflow-tpu (PyPI's
# newest is 2.20.0) with libtpu. The package is installed with TRANSFER_TF_KEEP_TENSORFLOW=1: the
# base image's TensorFlow stays. tests/test_deploy.py checks that every path and module named here
# exists; the image build itself is not tested in this repository's CI (no base images there).
ARG VARIANT=cpu
ARG TF_VERSION=2.21.0

FROM tensorflow/tensorflow:${TF_VERSION} AS base-cpu

FROM tensorflow/tensorflow:${TF_VERSION}-gpu AS base-gpu

FROM python:3.11-slim AS base-tpu
ARG TPU_TF_VERSION=2.20.0
RUN python3 -m pip install --no-cache-dir "tensorflow-tpu==${TPU_TF_VERSION}" \
        -f https://storage.googleapis.com/libtpu-tf-releases/index.html

FROM base-${VARIANT}
WORKDIR /opt/transfer_tf
COPY setup.py pyproject.toml README.md ./
COPY transfer_tf/ transfer_tf/
COPY pipelines/ pipelines/
COPY configs/ configs/
ENV TRANSFER_TF_KEEP_TENSORFLOW=1 \
    PYTHONUNBUFFERED=1
RUN python3 -m pip install --no-cache-dir . \
    && python3 -c "import tensorflow, transfer_tf.cloud_env, pipelines.__main__"
# `docker run IMAGE JOB FLAGS...`; JOB is any pipelines/<job>.py (pretrain, finetune, evaluate,
# export, predict, make_*_tfrecords, ...). Relative paths (configs/...) resolve in WORKDIR.
ENTRYPOINT ["python3", "-m", "pipelines"]
CMD ["pretrain", "--helpshort"]
