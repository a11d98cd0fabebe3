"""transfer_tf: image pretraining and transfer learning with TensorFlow/Keras."""

import os

from setuptools import find_packages, setup

JOBS = [
    "make_imagenet_tfrecords",
    "make_coco_tfrecords",
    "make_folder_tfrecords",
    "make_benchmark_shards",
    "inspect_tfrecords",
    "benchmark_input",
    "pretrain",
    "finetune",
    "evaluate",
    "export",
    "predict",
    "data_service",
    "demo",
]

# Pinned as a tested set: Keras 3.15 is the release TF 2.21 pairs with, keras-cv 0.9.0 is the last
# release that works with it. tensorboard: tf.summary.scalar needs it and TF 2.21 no longer
# installs it. tensorflow-serving-api: the PredictionLog protos of the export's warm-up requests
# (it requires tensorflow>=2.21).
PINNED_TENSORFLOW = [
    "tensorflow==2.21.0",
    "tensorboard==2.21.0",
    "keras==3.15.1",
    "tensorflow-serving-api==2.21.0",
]
# TRANSFER_TF_KEEP_TENSORFLOW=1: the machine's own TensorFlow stays (a TPU VM's build, a GPU image's
# CUDA build): no tensorflow requirement, tensorboard and keras only as lower bounds, and no
# tensorflow-serving-api (it would pull tensorflow>=2.21; exports then have no warm-up file).
KEEP_TENSORFLOW = ["tensorboard", "keras>=3.0"]
KEEP_ENV = "TRANSFER_TF_KEEP_TENSORFLOW"


def tensorflow_requirements(environ=os.environ) -> list[str]:
    """The TensorFlow-related requirements: the tested pins, or none that replace an installed
    TensorFlow when `TRANSFER_TF_KEEP_TENSORFLOW` is 1/true/yes."""
    keep = environ.get(KEEP_ENV, "").strip().lower() in ("1", "true", "yes")
    return list(KEEP_TENSORFLOW if keep else PINNED_TENSORFLOW)


setup(
    name="transfer_tf",
    version="0.1.0",
    description="Large-scale image pretraining and transfer learning with TensorFlow/Keras.",
    python_requires=">=3.10",
    packages=find_packages(include=["transfer_tf", "transfer_tf.*", "pipelines"]),
    install_requires=[
        *tensorflow_requirements(),
        "keras-cv==0.9.0",
        "tensorflow-datasets==4.9.10",
        "absl-py>=2.1,<3",
        "numpy>=1.26,<2.5",
        "PyYAML>=6.0",
        "Pillow>=10.0",
        "pycocotools>=2.0.8",
        "matplotlib>=3.8",
    ],
    extras_require={
        # transfer_tf.benchmarks measures process-tree memory; nothing else needs psutil.
        "benchmarks": ["psutil>=5.9"],
        "test": ["pytest>=8", "pytest-xdist>=3.5", "ruff>=0.6", "psutil>=5.9"],
    },
    entry_points={
        "console_scripts": [
            f"transfer-tf-{job.replace('_', '-')}=pipelines.{job}:run" for job in JOBS
        ],
    },
)
