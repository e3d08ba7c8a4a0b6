"""The data a check runs on: handed to Keras as the caller gave it, and read back as numpy
batches for the reference, one batch at a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from pytest_maskloss.compat.model import to_numpy
from pytest_maskloss.errors import MaskLossInputError

DEFAULT_BATCH_SIZE = 32  # Keras' own default for arrays
# A generator read without steps= is kept in memory; past this many batches it is taken to be
# endless rather than filling the machine's memory.
MAX_UNCOUNTED_BATCHES = 10_000


@dataclass
class Batch:
    x: Any
    y: Any
    sample_weight: Any = None

    @property
    def size(self) -> int:
        return int(leading_dim(self.x))


def is_text_rows(structure) -> bool:
    """A list of strings: one sample per string (what a KerasHub preprocessor takes)."""
    return isinstance(structure, (list, tuple)) and bool(structure) and all(
        isinstance(v, (str, bytes)) for v in structure
    )


def leading_dim(structure) -> int:
    """Number of samples: the first axis of the first array of a structure."""
    if is_text_rows(structure):
        return len(structure)
    if isinstance(structure, dict):
        structure = next(iter(structure.values()))
    elif isinstance(structure, (list, tuple)):
        structure = structure[0]
    return int(np.shape(structure)[0])


def slice_rows(structure, start, stop):
    """Rows ``start:stop`` of every array of a structure (None stays None)."""
    if structure is None:
        return None
    if is_text_rows(structure):
        return list(structure[start:stop])
    if isinstance(structure, dict):
        return {k: slice_rows(v, start, stop) for k, v in structure.items()}
    if isinstance(structure, (list, tuple)):
        return type(structure)(slice_rows(v, start, stop) for v in structure)
    return structure[start:stop]


def _split_element(element):
    """A dataset/generator element as (x, y, sample_weight), like Keras unpacks it: a tuple of
    one to three, or anything else as inputs alone (a model whose step makes its own labels,
    such as a KerasHub task fed strings; the observed step says whether labels reached it)."""
    if isinstance(element, (list, tuple)) and len(element) in (1, 2, 3):
        x, y, sw = (tuple(element) + (None, None))[:3]
        return Batch(to_numpy(x), to_numpy(y), to_numpy(sw))
    if isinstance(element, tuple):
        raise MaskLossInputError(
            "each batch must be x, (x,), (x, y) or (x, y, sample_weight), like Keras unpacks "
            f"it; got a tuple of length {len(element)}"
        )
    return Batch(to_numpy(element), None, None)


class DataSource:
    """One of: numpy arrays, a tf.data.Dataset, a Keras Sequence/PyDataset, a generator
    function (called afresh for every pass) or a generator object (read once and kept)."""

    def __init__(self, x, y=None, sample_weight=None, *, batch_size=None, steps=None):
        self.steps = steps
        self.batch_size = batch_size
        self._x, self._y, self._sw = x, y, sample_weight
        self._factory: Callable[[], Iterator] | None = None
        self._buffer: list | None = None
        if _is_dataset(x):
            self.kind = "dataset"
            self._check_cardinality(x, steps)
        elif hasattr(x, "__getitem__") and hasattr(x, "__len__") and _is_keras_sequence(x):
            self.kind = "sequence"
        elif callable(x) and not hasattr(x, "shape") and not isinstance(x, (dict, list, tuple)):
            self.kind = "generator"
            self._factory = x
        elif hasattr(x, "__next__"):
            self.kind = "generator"
            self._buffer = []
            for element in x:
                if steps is not None and len(self._buffer) >= steps:
                    break
                if steps is None and len(self._buffer) >= MAX_UNCOUNTED_BATCHES:
                    raise MaskLossInputError(
                        f"the generator yielded more than {MAX_UNCOUNTED_BATCHES} batches without "
                        "ending: pass steps= to say how many batches to check"
                    )
                self._buffer.append(_split_element(element))
        else:
            self.kind = "arrays"
            # y may be None: a model whose step makes its labels (a KerasHub task with its
            # preprocessor) gets x alone, as Keras allows; the observed step is judged.
            self._x, self._y, self._sw = to_numpy(x), to_numpy(y), to_numpy(sample_weight)
            n = leading_dim(self._x)
            if n == 0:
                raise MaskLossInputError("the data is empty: x has 0 samples")
            if self._y is not None and leading_dim(self._y) != n:
                raise MaskLossInputError(
                    f"x has {n} samples but y has {leading_dim(self._y)}"
                )
            self.batch_size = batch_size or DEFAULT_BATCH_SIZE
        if self.kind != "arrays" and (y is not None or sample_weight is not None):
            raise MaskLossInputError(
                f"y and sample_weight must be inside the {self.kind}, not passed separately"
            )
        if self.kind == "generator" and self._buffer is not None and not self._buffer:
            raise MaskLossInputError("the data is empty: the generator yielded no batch")

    @staticmethod
    def _check_cardinality(dataset, steps):
        import tensorflow as tf

        n = int(dataset.cardinality())
        if n == 0:
            raise MaskLossInputError("the data is empty: the dataset has no batch")
        if n == tf.data.INFINITE_CARDINALITY and steps is None:
            raise MaskLossInputError(
                "the dataset repeats forever: pass steps= to say how many batches to check"
            )

    def describe(self) -> str:
        if self.kind == "arrays":
            return f"arrays, batch_size={self.batch_size}"
        return self.kind

    # -- for the reference --------------------------------------------------------------

    def batches(self) -> Iterator[Batch]:
        count = 0
        for batch in self._raw_batches():
            if self.steps is not None and count >= self.steps:
                break
            count += 1
            yield batch
        if count == 0:
            raise MaskLossInputError("the data is empty: no batch to check")

    def _raw_batches(self):
        if self.kind == "arrays":
            n = leading_dim(self._x)
            for start in range(0, n, self.batch_size):
                stop = min(start + self.batch_size, n)
                yield Batch(
                    slice_rows(self._x, start, stop), slice_rows(self._y, start, stop), slice_rows(self._sw, start, stop)
                )
        elif self.kind == "dataset":
            for element in self._x:
                yield _split_element(element)
        elif self.kind == "sequence":
            for i in range(len(self._x)):
                yield _split_element(self._x[i])
        elif self._buffer is not None:
            yield from self._buffer
        else:
            iterator = self._factory()
            if self.steps is None and _looks_infinite(iterator):
                raise MaskLossInputError(
                    "the generator has no end: pass steps= to say how many batches to check"
                )
            for count, element in enumerate(iterator):
                if self.steps is None and count >= MAX_UNCOUNTED_BATCHES:
                    raise MaskLossInputError(
                        f"the generator yielded more than {MAX_UNCOUNTED_BATCHES} batches without "
                        "ending: pass steps= to say how many batches to check"
                    )
                yield _split_element(element)

    # -- for Keras ------------------------------------------------------------------------

    def keras_kwargs(self) -> dict:
        """Arguments for evaluate/fit that make Keras see the same batches, in the same order."""
        if self.kind == "arrays":
            kwargs = {"x": self._x, "batch_size": self.batch_size}
            if self._y is not None:
                kwargs["y"] = self._y
            if self._sw is not None:
                kwargs["sample_weight"] = self._sw
            return kwargs
        if self.kind == "dataset":
            data = self._x
            if self.steps is not None:
                return {"x": data, "steps": self.steps}
            return {"x": data}
        if self.kind == "sequence":
            return {"x": self._x}
        # generators: a fresh one per pass, with its batch count so Keras stops where we did
        batches = list(self._buffer) if self._buffer is not None else None

        def generator():
            source = batches if batches is not None else (_split_element(e) for e in self._factory())
            for batch in source:
                yield batch_tuple(batch)

        kwargs = {"x": generator()}
        kwargs["steps"] = self.steps if self.steps is not None else self.count_batches()
        return kwargs

    def count_batches(self) -> int:
        if self._buffer is not None:
            return len(self._buffer)
        return sum(1 for _ in self.batches())


def batch_tuple(batch: Batch):
    if batch.y is None and batch.sample_weight is None:
        return (batch.x,)
    if batch.sample_weight is None:
        return (batch.x, batch.y)
    return (batch.x, batch.y, batch.sample_weight)


def _is_dataset(x):
    return any(c.__name__ in ("DatasetV2", "Dataset") and "tensorflow" in c.__module__ for c in type(x).__mro__)


def _is_keras_sequence(x):
    return any(c.__name__ in ("Sequence", "PyDataset") for c in type(x).__mro__)


def _looks_infinite(iterator):
    # itertools.count/repeat/cycle report no length; a generator never does. Only the obvious
    # infinite iterators can be recognised without consuming them.
    return type(iterator).__name__ in ("count", "repeat", "cycle")
