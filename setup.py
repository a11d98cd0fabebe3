"""transfer_tf: image pretraining and transfer learning with TensorFlow/Keras."""

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

setup(
    name="transfer_tf",
    version="0.1.0",
    description="Large-scale image pretraining and transfer learning with TensorFlow/Keras.",
    python_requires=">=3.10",
    packages=find_packages(include=["transfer_tf", "transfer_tf.*", "pipelines"]),
    install_requires=[
        # Pinned as a tested set: Keras 3.15 is the release TF 2.21 pairs with, keras-cv 0.9.0 is
        # the last release that works with it.
        "tensorflow==2.21.0",
        "keras==3.15.1",
        "keras-cv==0.9.0",
        "tensorflow-datasets==4.9.10",
        "absl-py>=2.1,<3",
        "numpy>=1.26,<2.5",
        "PyYAML>=6.0",
        "Pillow>=10.0",
        "pycocotools>=2.0.8",
        "matplotlib>=3.8",
        # tf.summary.scalar (training summaries) needs it: TF 2.21 no longer installs it.
        "tensorboard==2.21.0",
    ],
    extras_require={
        # transfer_tf.benchmarks measures process-tree memory; nothing else needs psutil.
        "benchmarks": ["psutil>=5.9"],
        "test": ["pytest>=8", "pytest-xdist>=3.5", "ruff>=0.6", "scikit-learn>=1.4", "psutil>=5.9"],
    },
    entry_points={
        "console_scripts": [
            f"transfer-tf-{job.replace('_', '-')}=pipelines.{job}:run" for job in JOBS
        ],
    },
)
