"""Imported once by the builders' forkserver (see `worker_start.pool_context`), never by users.

Importing it loads the builders (and TensorFlow) and then freezes the garbage collector, so the
objects made by those imports move to a generation that collections never walk: a worker forked
from the server then leaves those pages shared instead of copying each one the first time a
collection writes to an object header (about 100 MB per worker with TensorFlow loaded).
"""

import gc

import transfer_tf.data.builders  # noqa: F401  (the point of this module)

gc.freeze()
