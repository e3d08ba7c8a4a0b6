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


def map_leaves(function, tree):
    """``function`` applied to each leaf of nested dicts, lists and tuples (None included),
    the structure kept."""
    if isinstance(tree, dict):
        return {k: map_leaves(function, v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(map_leaves(function, v) for v in tree)
    return function(tree)


def detached(tree):
    """PyTorch tensors as detached CPU copies; anything else as it is."""
    return map_leaves(lambda t: t.detach().cpu() if hasattr(t, "detach") else t, tree)


def numpy_tree(value):
    """Every tensor as a numpy array; None stays None."""
    return map_leaves(lambda t: None if t is None else to_numpy(t), value)
