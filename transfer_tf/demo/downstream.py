"""What the demo's two optional downstream-task sections (`demo/detection.py`,
`demo/segmentation.py`) share: a run fine-tuned from the demo's pretrained backbone (`fpn,head`,
then `all`) against one from scratch at the same step budget, each trained and evaluated by the
real binaries, then the fine-tuned one exported and run on one val image by `pipelines.predict`,
and the report's table of both runs' metrics.

Each section describes itself with a `DownstreamTask`; the task-specific parts (its config
section, the predict output it reads back) stay in its own module.

Example:
    stages = downstream_stages(paths, DETECTION, draw_dir=paths.plots)
    configs = finetune_and_scratch_configs(base, cfg.name, DETECTION, STEPS, BASE_LEARNING_RATE)
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

from transfer_tf.config import ExperimentConfig, PhaseConfig
from transfer_tf.demo.plan import DemoPaths, Stage, coco_eval_pattern, predict_image


@dataclass(frozen=True)
class DownstreamTask:
    """One downstream task of the demo, as its stages, configs and report name it."""

    name: str  # `detection`: names the export and predict stages and the export folder
    finetune_run: str  # the run from the pretrained backbone, e.g. `detect_finetune`
    scratch_run: str  # the run from random weights, e.g. `detect_scratch`
    titles: dict[str, str]  # run -> its title in the stage table and the report
    evaluation: str  # what the evaluate stages measure, in their titles
    export_title: str
    predict_title: str

    @property
    def runs(self) -> tuple[str, str]:
        """The fine-tuned run, then the scratch run (stage and report order)."""
        return (self.finetune_run, self.scratch_run)


def export_dir(paths: DemoPaths, task: DownstreamTask) -> str:
    """Where the fine-tuned run of `task` is exported as a SavedModel."""
    return os.path.join(paths.work_dir, f"export_{task.name}")


def predict_output(paths: DemoPaths, task: DownstreamTask) -> str:
    """The JSON `pipelines.predict --json` prints for the val image (the predict stage's stdout)."""
    return paths.metrics(f"predict_{task.name}")


def finetune_and_scratch_configs(
    base: ExperimentConfig,
    demo_name: str,
    task: DownstreamTask,
    steps: int,
    base_learning_rate: float,
) -> dict[str, ExperimentConfig]:
    """The two experiments of `task` from `base` (its data, model and task sections set), each
    `steps` long at `base_learning_rate`: the fine-tuned run trains `fpn,head` for a quarter of
    the budget, then `all`; the scratch run trains `all` throughout."""
    heads = steps // 4
    finetune = copy.deepcopy(base)
    finetune.name = f"{demo_name}_{task.finetune_run}"
    finetune.transfer.phases = [
        PhaseConfig(
            name="heads",
            trainable="fpn,head",
            steps=heads,
            base_learning_rate=base_learning_rate,
            lr_schedule="constant",
            warmup_steps=heads // 5,
            # Batch-statistics BN, as in the `all` phase (BENCHMARKS.md, detection transfer).
            frozen_batchnorm="train",
        ),
        PhaseConfig(
            name="all",
            trainable="all",
            steps=steps - heads,
            base_learning_rate=base_learning_rate,
            warmup_steps=steps // 10,  # a fresh optimizer on newly unfrozen layers
        ),
    ]
    scratch = copy.deepcopy(base)
    scratch.name = f"{demo_name}_{task.scratch_run}"
    scratch.transfer.phases = [
        PhaseConfig(
            name="scratch",
            trainable="all",
            steps=steps,
            base_learning_rate=base_learning_rate,
            warmup_steps=steps // 10,
        )
    ]
    return {task.finetune_run: finetune, task.scratch_run: scratch}


def downstream_stages(paths: DemoPaths, task: DownstreamTask, draw_dir: str) -> list[Stage]:
    """Train and evaluate each run, export the fine-tuned one, predict one val image through the
    SavedModel (drawn into `draw_dir`), in order."""
    d = paths
    stages = []
    for run in task.runs:
        args = [f"--config={d.config(run)}", f"--model_dir={d.run_dir(run)}"]
        needs: tuple[str, ...] = ("build_coco",)
        if run == task.finetune_run:
            args.insert(1, f"--init_checkpoint={d.run_dir('pretrain')}")
            needs += ("pretrain",)
        evaluate = [
            f"--model_dir={d.run_dir(run)}",
            f"--output={d.metrics(run)}",
            f"--eval_pattern={coco_eval_pattern(d)}",
        ]
        stages += [
            Stage(
                run,
                task.titles[run],
                [("pipelines.finetune", args)],
                needs=needs,
                outputs=(os.path.join(d.run_dir(run), "config.yaml"),),
            ),
            Stage(
                f"evaluate_{run}",
                f"Evaluate the {run} run ({task.evaluation})",
                [("pipelines.evaluate", evaluate)],
                needs=(run,),
                outputs=(d.metrics(run),),
            ),
        ]
    export = [
        f"--model_dir={d.run_dir(task.finetune_run)}",
        f"--export_dir={export_dir(d, task)}",
    ]
    predict = [
        f"--saved_model={export_dir(d, task)}",
        "--json",
        f"--draw_dir={draw_dir}",
        predict_image(d),
    ]
    return stages + [
        Stage(
            f"export_{task.name}",
            task.export_title,
            [("pipelines.export", export)],
            needs=(task.finetune_run,),
        ),
        Stage(
            f"predict_{task.name}",
            task.predict_title,
            [("pipelines.predict", predict)],
            needs=(f"export_{task.name}",),
            outputs=(predict_output(d, task),),
            stdout_file=predict_output(d, task),
        ),
    ]


def runs_table(
    paths: DemoPaths, read_json, task: DownstreamTask, columns: dict[str, str]
) -> list[str] | None:
    """The report's markdown table of both runs: one row per run with the metrics `columns`
    ({metrics key: column header}) and the metrics file it came from. None when neither run
    wrote metrics."""
    docs = {run: read_json(paths.metrics(run)) for run in task.runs}
    if not any(docs.values()):
        return None
    header = " | ".join(["run", *columns.values(), "source"])
    lines = [f"| {header} |", "|" + "---|" * (len(columns) + 2)]
    for run in task.runs:
        doc = docs[run] or {}
        cells = [f"{doc[k]:.4f}" if k in doc else "–" for k in columns]
        source = f"`metrics/{run}.json`" if docs[run] else "not run"
        lines.append(f"| {task.titles[run]} | " + " | ".join(cells) + f" | {source} |")
    return lines
