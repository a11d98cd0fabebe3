"""transfer_tf: large-scale image pretraining and transfer learning with TensorFlow/Keras."""

__version__ = "0.1.0"
