"""The embedded end-to-end demo (`make demo`): generated data through every stage of the system.

plan.py     the demo's folders, the per-stage experiment configs and binary commands
stages.py   runs one binary as a subprocess with live progress and a log file
report.py   reads the runs' TensorBoard summaries and metrics JSONs; plots; report.md
runner.py   run_demo(): generate -> build TFRecords -> pretrain -> evaluate -> fine-tune
            (pretrained and scratch) -> evaluate -> export -> predict -> report
"""
