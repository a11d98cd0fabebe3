"""End-to-end demo on generated data: `python -m pipelines.demo --work_dir=DIR`.

Runs every stage of the system that exists, with the same binaries and formats used at scale.
"""

import os

from absl import flags, logging

from transfer_tf import cli

cli.define_config_flags(
    default_config=os.path.join(os.path.dirname(__file__), "..", "configs", "demo.yaml")
)
flags.DEFINE_string("work_dir", "demo_out", "Where the demo writes data, runs and its report.")
FLAGS = flags.FLAGS


def main(argv):
    cli.reject_extra_args(argv)
    cfg = cli.load_config_from_flags()
    path = cli.write_resolved_config(cfg, FLAGS.work_dir)
    logging.info("Resolved demo config written to %s", path)
    print(f"demo: config resolved to {path}")


def run():
    cli.run(main)


if __name__ == "__main__":
    run()
