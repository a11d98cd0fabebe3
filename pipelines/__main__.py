"""One entry point for every binary: `python -m pipelines JOB [FLAGS...]` (the container's).

    docker run IMAGE pretrain --config=configs/imagenet_resnet50.yaml --model_dir=gs://b/r50
    docker run IMAGE evaluate --model_dir=gs://b/r50

Arguments may hold Kubernetes-style `$(NAME)` references to environment variables
(`transfer_tf.cloud_env.expand_references`): a job spec names the bucket once, in an environment
variable, and every path uses it, under GKE (kubelet expands them), Vertex AI and `docker run`
(expanded here) alike.
"""

from __future__ import annotations

import importlib
import os
import sys

from transfer_tf.cloud_env import expand_references

USAGE_EXIT_CODE = 2


def jobs() -> list[str]:
    """The binaries this package holds (each `pipelines/<job>.py` with a `run()`)."""
    folder = os.path.dirname(os.path.abspath(__file__))
    names = [n[:-3] for n in os.listdir(folder) if n.endswith(".py") and not n.startswith("_")]
    return sorted(
        n for n in names if "\ndef run() -> None:" in open(os.path.join(folder, f"{n}.py")).read()
    )


def main(argv: list[str] | None = None) -> None:
    """Runs `pipelines.<argv[1]>` with the remaining arguments, `$(NAME)` references expanded."""
    argv = list(sys.argv if argv is None else argv)
    known = jobs()
    if len(argv) < 2 or argv[1] not in known:
        given = f"unknown job {argv[1]!r}" if len(argv) > 1 else "no job given"
        sys.stderr.write(
            f"error: {given}; usage: JOB [FLAGS...] with JOB one of {', '.join(known)}\n"
        )
        sys.exit(USAGE_EXIT_CODE)
    job = argv[1]
    # absl reads sys.argv; the program name is the module's, so "resume with:" lines rerun it.
    sys.argv = [f"pipelines.{job}", *(expand_references(a) for a in argv[2:])]
    importlib.import_module(f"pipelines.{job}").run()


if __name__ == "__main__":
    main()
