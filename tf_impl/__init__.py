"""TensorFlow/Keras side: the same model family, weight conversion, the env and the PPO trainer.

TensorFlow 2.21 writes start-up notes (oneDNN, "could not find cuda drivers") straight to file
descriptor 2, ignoring TF_CPP_MIN_LOG_LEVEL. They are info, not errors, and would break the
CLI's promise that a failed command prints one `error:` line; so TensorFlow is imported, and its
devices initialised, with descriptor 2 pointed at /dev/null. Set SFTRL_TF_VERBOSE=1 to see them.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _import_tensorflow_quietly():
    if os.environ.get("SFTRL_TF_VERBOSE") == "1":
        import tensorflow  # noqa: F401
        return
    try:
        saved = os.dup(2)
    except OSError:  # no usable stderr descriptor: nothing to silence
        import tensorflow  # noqa: F401
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        import tensorflow as tf
        tf.config.list_physical_devices()  # device discovery logs here, once
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_import_tensorflow_quietly()
