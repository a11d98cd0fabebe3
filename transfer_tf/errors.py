"""Errors the library raises for user mistakes; binaries report them in one line and exit 2."""


class UsageError(Exception):
    """A user mistake (bad flag, missing input, invalid data, missing hardware).

    The message must say in one line what is wrong and name the file/flag/key involved.
    """


class ConfigError(ValueError):
    """An invalid config: the message names the offending key and what was expected.

    Defined here (re-exported by `transfer_tf.config`) so that section validators living beside
    their feature (e.g. `ssl.settings`) raise it without importing the config loader.
    """


class OutputError(UsageError):
    """An output location cannot be written (read-only, not a folder, disk full, no permission).

    The message names the path and the operating system's reason; whatever the failed write
    created has been removed, so a rerun starts from the last complete output.
    """
