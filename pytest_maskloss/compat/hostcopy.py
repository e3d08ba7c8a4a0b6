"""A step's tensors as the tap's host side reads them: numpy views of TensorFlow tensors,
detached CPU copies of PyTorch ones, nested structures converted leaf by leaf."""

from __future__ import annotations

from pytest_maskloss.compat.model import to_numpy


def view(tensor):
    """The tensor's memory as a read-only numpy array, without a copy. Valid while the
    callback runs: the host handles a step before it returns, and copies what it keeps."""
    try:
        return tensor._numpy()
    except Exception:  # a TensorFlow without the private view, or a non-CPU tensor
        return tensor.numpy()


def symbolic(tree) -> bool:
    """A PyTorch tensor on the meta device (shapes only) anywhere in the payload."""
    if isinstance(tree, dict):
        return any(symbolic(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return any(symbolic(v) for v in tree)
    return bool(getattr(tree, "is_meta", False))


def detached(tree):
    if isinstance(tree, dict):
        return {k: detached(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(detached(v) for v in tree)
    if hasattr(tree, "detach"):
        return tree.detach().cpu()
    return tree


def numpy_tree(value):
    if value is None:
        return None
    if isinstance(value, dict):
        return {k: numpy_tree(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(numpy_tree(v) for v in value)
    return to_numpy(value)
