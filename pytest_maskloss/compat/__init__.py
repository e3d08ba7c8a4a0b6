"""The compatibility layer: the only code that tells Keras 3 (TensorFlow, JAX, PyTorch) from
tf_keras and tf.keras 2.x. The check, the plugin, the losses and the scanner ask it.

Importing this package loads nothing heavy: ``flavours`` is pure Python; the modules that touch
live Keras objects import TensorFlow/Keras only when called.
"""
