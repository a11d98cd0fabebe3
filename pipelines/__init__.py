"""absl binaries, one per job.

Importing this package (which `python -m pipelines.X` and the console scripts do first) turns
TensorFlow's oneDNN CPU kernels on (transfer_tf/onednn.py) and quiets TensorFlow's start-up noise,
before any binary imports TensorFlow.
"""

from transfer_tf import onednn
from transfer_tf.quiet import import_tensorflow_quietly

onednn.enable_before_tensorflow()
import_tensorflow_quietly()
