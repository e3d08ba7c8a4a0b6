"""Odd and hostile source never crashes the scanner (the fuzz tests live in test_fuzz*.py)."""

import pytest

from pytest_maskloss.scan.engine import check_source

SNIPPETS = [
    "x = " + "[" * 50 + "]" * 50 + "\nmodel.compile(loss='mse')",
    "class A(A):\n    pass\n# Embedding",
    "def f():\n    return f()\nm = f()\nm.compile(loss='mse')",
    "import keras\nclass M(keras.Model):\n    def call(self, x):\n        return self(x)\nm = M()\nm.compile(loss='mse')",
    "import keras\nm = keras.Sequential()\nm.add(m)\nm.compile(loss='mse')",
    "import keras\nx = x.y\nx.compile(loss='mse')",
    "import keras\ndef build():\n    return build()\nbuild().compile(loss='mse')",
    "from . import x\nfrom .. import y\nfrom ...... import z\nz.compile(loss='mse')",
    "import keras\nm = keras.Sequential([*layers, keras.layers.Embedding(1, 2, mask_zero=True)])\nm.compile(loss=[*ls])",
    "import keras\nclass L(keras.losses.Loss):\n    __call__ = None\n",
    "import keras\nclass A(keras.Model):\n    def __init__(self):\n        self.a = A()\n    def call(self, x):\n        return self.a(x)\nA().compile(loss='mse')",
    "import keras\nm = keras.Model(*args, **kw)\nm.compile(**kw)\nm.fit(sample_weight=mask)",
    "async def f():\n    m = await g()\n    m.compile(loss='mse')",
    "match x:\n    case 1:\n        m.compile(loss='mse')\n",
    "import keras\nm = keras.Sequential([keras.layers.Embedding(1, 2, mask_zero=True)])\nh = m.fit()\nimport math\n"
    "math.exp(h.history[0])\nmath.exp(h.history)\nmath.exp(m.evaluate()['x'])",
    "\ufeffimport keras # Embedding",
    "import keras\nclass L(keras.layers.Layer):\n    def compute_mask(self):\n        pass\nclass L(L): pass\n"
    "m=keras.Sequential([L()])\nm.compile(loss='mse')",
    "import keras as k, keras.layers as k\nk.Embedding(mask_zero=True).compile(loss='mse')",
    "while True: m = keras.Sequential([m]); m.compile(loss='mse')",
    "import tensorflow as tf\nt = tf.keras.Input(None)\nt2 = t[0][1][:, 2]\nm = tf.keras.Model(t, t2)\nm.compile('a', 'mse')",
    "x = '\\N{BOGUS NAME}'  # Embedding",
    "def f(:\n  # Embedding",
    "",
    "\n\n\n",
    "# only a comment about Embedding",
]


@pytest.mark.parametrize("source", SNIPPETS)
@pytest.mark.parametrize("version", [None, "2.10", "3.7"])
def test_no_crash(source, version):
    findings = check_source(source, version)
    for f in findings:
        assert f.line >= 1 and f.col >= 1 and f.code.startswith("MSK")


@pytest.mark.parametrize(
    "source",
    [
        "x = " + "f(" * 3000 + ")" * 3000 + "\n# Embedding",
        "x = " + "not " * 20000 + "1\n# Embedding",
        "x = " + "(" * 1500 + "1" + ")" * 1500 + "\n# Embedding",
    ],
    ids=["calls", "not-chain", "parens"],
)
def test_nesting_that_overflows_libcst_is_msk900_not_a_segfault(source):
    (f,) = check_source(source)
    assert f.code == "MSK900"
