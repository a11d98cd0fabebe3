"""absl binaries, one per job.

Importing this package (which `python -m pipelines.X` and the console scripts do first) quiets
TensorFlow's start-up noise before any binary imports TensorFlow.
"""

from transfer_tf.quiet import import_tensorflow_quietly

import_tensorflow_quietly()
