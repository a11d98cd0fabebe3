"""Scale-out helpers: multi-worker cluster setup, pre-flight checks, tf.data service servers."""
