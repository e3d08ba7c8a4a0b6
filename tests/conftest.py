"""Root conftest.

TensorFlow is imported here, once, when it is installed: pytester restores ``sys.modules``
after an in-process run, and a TensorFlow first imported inside such a run would be dropped
and imported again. Two logical CPU devices are configured before anything touches the
devices so that tf.distribute tests have two replicas.
"""

import os

try:
    import tensorflow as tf
except ImportError:  # the scanner tests run without TensorFlow
    tf = None

if tf is not None:
    try:
        cpus = tf.config.list_physical_devices("CPU")
        tf.config.set_logical_device_configuration(
            cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2
        )
    except RuntimeError:  # devices already initialised by an earlier import
        pass

pytest_plugins = ["pytester"]
