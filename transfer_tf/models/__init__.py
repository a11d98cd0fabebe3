"""ResNet classifiers (`resnet`) and strict loading of pretrained weights into them (`weights`)."""

import gc


def release_models() -> None:
    """Drops Keras' global graph state so models nobody references any more free their memory
    (between demo stages, between autotune probe candidates)."""
    import keras

    keras.backend.clear_session()
    gc.collect()
