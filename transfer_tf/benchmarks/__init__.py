"""Benchmark harnesses and their data, one module per `pipelines/benchmark_*` binary.

Nothing in the training, transfer or serving path imports this package. It measures that path:
input pipeline (`input_shards`, `input_throughput`), TFRecord builders (`builders`,
`coco_builder`), serving (`serving`), transfer quality (`transfer`, `transfer_photos`).
Results and the commands that produced them live in BENCHMARKS.md. Memory figures need the
`benchmarks` extra (`pip install -e '.[benchmarks]'`: psutil).
"""
