"""Deterministic synthetic corpus for the scanner benchmark.

``build_corpus(root, n_files, seed)`` writes ``n_files`` Python files under ``root`` in a
repository-like tree (packages, ``__init__.py`` files, tests, scripts, a few non-Python files)
and returns one :class:`CorpusFile` per ``.py`` file. A minority are Keras training scripts
generated from independent choices:

- import form (``import tensorflow as tf``, ``from tensorflow import keras``, ``import keras``,
  ``from tensorflow.keras import layers``, direct names, ``as K`` / ``as L`` aliases,
  ``tf_keras``, a try/except import, an assignment alias ``layers = tf.keras.layers``);
- model style (Sequential list, Sequential ``.add``, functional, subclassed, builder function);
- mask (``Embedding(mask_zero=True)``, ``mask_zero=False``, no mask, ``Masking``);
- what follows the mask (``return_sequences=True`` recurrent layer, a recurrent layer that
  consumes the mask, pooling, ``TimeDistributed``, ``Bidirectional``);
- loss (stock string by keyword or positionally, stock class instance, stock function object,
  dict of stock strings, custom function, custom ``Loss`` subclass, loss held in a variable);
- extras (``exp(history.history["loss"])`` perplexity, evaluate, data preparation, CLI).

The rest are ordinary Python modules without Keras (utilities, dataclasses, CLIs, pytest
files, numpy/pandas scripts, PyTorch training loops that mention ``Embedding``, ``loss`` and
``compile``, ``re.compile`` users, configuration modules) of widely varying size.

Every choice comes from one ``random.Random(seed)``: the same seed gives byte-identical files.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["CorpusFile", "build_corpus", "generate_keras_module", "generate_plain_module"]

STOCK_LOSS_STRINGS = (
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "binary_crossentropy",
    "mse",
    "mean_squared_error",
    "kl_divergence",
)


@dataclass
class CorpusFile:
    relpath: str
    keras: bool
    #: generator's description of the Keras choices ("" for plain files)
    kind: str = ""
    #: a mask layer (mask_zero=True or Masking) and a compile(...) with a stock loss in one module
    masked_and_stock: bool = False
    #: ... and the mask reaches the model output (nothing consumes it)
    mask_reaches_output: bool = False
    size: int = 0
    tags: dict = field(default_factory=dict)


# --------------------------------------------------------------------------- vocabulary

WORDS = (
    "alpha beta gamma delta token batch record item value buffer cache index path config "
    "reader writer parser loader sample frame window chunk shard epoch step score label "
    "target source vocab table node edge graph tree queue stack result output input state "
    "context handler session client server request response payload header field column "
    "row matrix vector tensor metric counter timer event signal worker task job pool"
).split()
VERBS = (
    "load save parse build make compute update reset merge split filter normalize encode "
    "decode apply collect flush render format validate check fetch emit read write convert"
).split()


def _ident(rng: random.Random, n: int = 2) -> str:
    return "_".join(rng.choice(WORDS) for _ in range(n))


def _fname(rng: random.Random) -> str:
    return f"{rng.choice(VERBS)}_{_ident(rng, rng.randint(1, 2))}"


def _cname(rng: random.Random) -> str:
    return "".join(w.capitalize() for w in (rng.choice(WORDS), rng.choice(WORDS), rng.choice(("Manager", "Builder", "Config", "Store", "Spec", "Pipeline", "Helper"))))


def _expr(rng: random.Random, names: list[str], depth: int = 0) -> str:
    r = rng.random()
    if depth > 2 or r < 0.25:
        choice = rng.randrange(6)
        if choice == 0 and names:
            return rng.choice(names)
        if choice == 1:
            return str(rng.randint(0, 1000))
        if choice == 2:
            return repr(rng.choice(WORDS))
        if choice == 3:
            return f"{rng.random():.4f}"
        if choice == 4 and names:
            return f"{rng.choice(names)}.{rng.choice(WORDS)}"
        return "None"
    if r < 0.45:
        op = rng.choice(("+", "-", "*", "//", "%", "and", "or", "==", "<", ">="))
        return f"{_expr(rng, names, depth + 1)} {op} {_expr(rng, names, depth + 1)}"
    if r < 0.6:
        args = ", ".join(_expr(rng, names, depth + 1) for _ in range(rng.randint(0, 3)))
        return f"{_fname(rng)}({args})"
    if r < 0.7:
        v = rng.choice(("x", "item", "k"))
        return f"[{v} for {v} in {_expr(rng, names, depth + 1)} if {v}]"
    if r < 0.8:
        return "{" + ", ".join(f"{rng.choice(WORDS)!r}: {_expr(rng, names, depth + 1)}" for _ in range(rng.randint(0, 3))) + "}"
    if r < 0.9 and names:
        return f'f"{rng.choice(WORDS)}={{{rng.choice(names)}!r}} {rng.choice(WORDS)}"'
    return f"({_expr(rng, names, depth + 1)}, {_expr(rng, names, depth + 1)})"


def _block(rng: random.Random, names: list[str], indent: str, n: int, depth: int = 0) -> list[str]:
    lines: list[str] = []
    for _ in range(n):
        r = rng.random()
        if r < 0.35 or depth >= 2:
            target = _ident(rng, 1)
            lines.append(f"{indent}{target} = {_expr(rng, names)}")
            names.append(target)
        elif r < 0.45:
            lines.append(f"{indent}# {' '.join(rng.choice(WORDS) for _ in range(rng.randint(3, 10)))}")
            lines.append(f"{indent}{_fname(rng)}({_expr(rng, names)})")
        elif r < 0.6:
            lines.append(f"{indent}if {_expr(rng, names)}:")
            lines += _block(rng, list(names), indent + "    ", rng.randint(1, 3), depth + 1)
            if rng.random() < 0.4:
                lines.append(f"{indent}else:")
                lines += _block(rng, list(names), indent + "    ", rng.randint(1, 2), depth + 1)
        elif r < 0.72:
            v = rng.choice(("i", "row", "entry", "key"))
            lines.append(f"{indent}for {v} in {_expr(rng, names)}:")
            lines += _block(rng, names + [v], indent + "    ", rng.randint(1, 3), depth + 1)
        elif r < 0.8:
            lines.append(f"{indent}try:")
            lines += _block(rng, list(names), indent + "    ", rng.randint(1, 2), depth + 1)
            lines.append(f"{indent}except ({rng.choice(('KeyError', 'ValueError', 'OSError'))}, TypeError) as exc:")
            lines.append(f"{indent}    log.warning(\"{rng.choice(VERBS)} failed: %s\", exc)")
        elif r < 0.88:
            lines.append(f"{indent}with open({_expr(rng, names)}) as fh:")
            lines += _block(rng, names + ["fh"], indent + "    ", rng.randint(1, 2), depth + 1)
        else:
            lines.append(f"{indent}{_fname(rng)}({_expr(rng, names)})")
    return lines


def _function(rng: random.Random, indent: str = "", method: bool = False) -> list[str]:
    params = list(dict.fromkeys(_ident(rng, 1) for _ in range(rng.randint(0, 4))))
    required, optional = [], []
    for p in params:
        ann = rng.choice(("int", "str", "float", "list", "dict | None"))
        if rng.random() < 0.3:
            optional.append(f"{p}: {ann} = {rng.choice(('None', '0', '1.0', repr(rng.choice(WORDS)), '()'))}")
        else:
            required.append(f"{p}: {ann}")
    parts = (["self"] if method else []) + required + optional
    lines = []
    if rng.random() < 0.2:
        lines.append(f"{indent}@{rng.choice(('functools.lru_cache(maxsize=None)', 'staticmethod' if not method else 'property', 'contextlib.contextmanager'))}")
        if "staticmethod" in lines[-1] or "property" in lines[-1]:
            lines.pop()
    kw = "async def" if rng.random() < 0.05 else "def"
    lines.append(f"{indent}{kw} {_fname(rng)}({', '.join(parts)}) -> {rng.choice(('None', 'int', 'str', 'dict', 'list[str]'))}:")
    if rng.random() < 0.6:
        lines.append(f'{indent}    """{" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))).capitalize()}.')
        if rng.random() < 0.5:
            lines.append("")
            for p in params:
                lines.append(f"{indent}    {p}: the {rng.choice(WORDS)} to {rng.choice(VERBS)}.")
        lines.append(f'{indent}    """')
    lines += _block(rng, list(params), indent + "    ", rng.randint(2, 12))
    lines.append(f"{indent}    return {_expr(rng, params)}")
    return lines


def _class(rng: random.Random) -> list[str]:
    lines = []
    if rng.random() < 0.4:
        lines.append("@dataclasses.dataclass")
        lines.append(f"class {_cname(rng)}:")
        for _ in range(rng.randint(1, 6)):
            lines.append(f"    {_ident(rng, 1)}: {rng.choice(('int', 'str', 'float'))} = {rng.choice(('0', repr(''), '0.5'))}")
    else:
        base = rng.choice(("", "(object)", "(Exception)", "(abc.ABC)", "(dict)"))
        lines.append(f"class {_cname(rng)}{base}:")
        lines.append(f'    """{" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))).capitalize()}."""')
    for _ in range(rng.randint(0, 5)):
        lines.append("")
        lines += _function(rng, "    ", method=True)
    return lines


# --------------------------------------------------------------------------- plain modules

PLAIN_HEADERS = (
    "import os\nimport sys\nimport logging\n",
    "from __future__ import annotations\n\nimport dataclasses\nimport functools\nimport json\nimport logging\nfrom pathlib import Path\n",
    "import abc\nimport contextlib\nimport functools\nimport logging\nimport re\n",
    "import argparse\nimport csv\nimport logging\nimport time\n",
    "import numpy as np\nimport pandas as pd\nimport logging\n",
    "import collections\nimport itertools\nimport logging\nimport typing as t\n",
)


def _torch_block(rng: random.Random) -> list[str]:
    """A PyTorch training loop: mentions Embedding, padding, loss and compile but no Keras."""
    v, d = rng.choice((1000, 5000, 32000)), rng.choice((64, 128, 256))
    return [
        "import torch",
        "from torch import nn",
        "",
        "",
        f"class {_cname(rng)}(nn.Module):",
        "    def __init__(self):",
        "        super().__init__()",
        f"        self.embedding = nn.Embedding({v}, {d}, padding_idx=0)",
        f"        self.rnn = nn.LSTM({d}, {d}, batch_first=True)",
        f"        self.head = nn.Linear({d}, {v})",
        "",
        "    def forward(self, tokens):",
        "        hidden, _ = self.rnn(self.embedding(tokens))",
        "        return self.head(hidden)",
        "",
        "",
        f"def train_{_ident(rng, 1)}(model, loader, epochs={rng.randint(1, 20)}):",
        "    model = torch.compile(model)",
        "    loss_fn = nn.CrossEntropyLoss(ignore_index=0)",
        "    opt = torch.optim.Adam(model.parameters(), lr=1e-3)",
        "    for epoch in range(epochs):",
        "        total, count = 0.0, 0",
        "        for tokens, labels in loader:",
        "            loss = loss_fn(model(tokens).transpose(1, 2), labels)",
        "            opt.zero_grad()",
        "            loss.backward()",
        "            opt.step()",
        "            total += loss.item() * (labels != 0).sum().item()",
        "            count += (labels != 0).sum().item()",
        "        print(epoch, math.exp(total / max(count, 1)))",
    ]


def generate_plain_module(rng: random.Random, kind: str) -> str:
    """A module without Keras. ``kind``: init, test, config, module, torch, script."""
    if kind == "init":
        if rng.random() < 0.4:
            return ""
        names = [_fname(rng) for _ in range(rng.randint(1, 6))]
        mod = _ident(rng, 1)
        return f'"""{" ".join(rng.choice(WORDS) for _ in range(5)).capitalize()}."""\n\nfrom .{mod} import {", ".join(names)}\n\n__all__ = {names!r}\n'
    if kind == "config":
        lines = ['"""Settings."""', "", "import os", ""]
        for _ in range(rng.randint(5, 60)):
            key = _ident(rng, 2).upper()
            lines.append(f"{key} = {rng.choice((repr(rng.choice(WORDS)), str(rng.randint(0, 9999)), 'os.environ.get(' + repr(key) + ')', '[' + ', '.join(repr(rng.choice(WORDS)) for _ in range(3)) + ']'))}")
        if rng.random() < 0.3:
            lines += ["", "LOSS_WEIGHTS = {'tokens': 1.0, 'aux': 0.1}", "PATTERN = re.compile(r'^loss=(\\d+\\.\\d+)$')"]
        return "\n".join(lines) + "\n"
    if kind == "test":
        lines = ["import pytest", "", f"from {_ident(rng, 1)} import {_fname(rng)}", ""]
        for _ in range(rng.randint(1, 15)):
            lines += ["", ""]
            if rng.random() < 0.3:
                lines.append(f"@pytest.mark.parametrize('value', [{rng.randint(0, 9)}, {rng.randint(10, 99)}, None])")
                lines.append(f"def test_{_fname(rng)}(value):")
            else:
                lines.append(f"def test_{_fname(rng)}(tmp_path):")
            lines += _block(rng, ["tmp_path"], "    ", rng.randint(1, 6))
            lines.append(f"    assert {_fname(rng)}(tmp_path) == {_expr(rng, ['tmp_path'], 2)}")
        return "\n".join(lines) + "\n"
    header = rng.choice(PLAIN_HEADERS)
    lines = [f'"""{" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))).capitalize()}."""', "", header.rstrip("\n"), "", "log = logging.getLogger(__name__)"]
    if kind == "torch":
        lines[2] = lines[2] + "\nimport math"
        lines += ["", ""] + _torch_block(rng)
    if rng.random() < 0.15:
        lines += ["", f"_RE_{_ident(rng, 1).upper()} = re.compile(r'[a-z_]+\\s*=\\s*(\\S+)')" if "import re" in header else f"_PATTERN = {rng.choice(WORDS)!r}"]
    # long-tailed size: most modules are small, a few are very large
    n_defs = min(int(rng.lognormvariate(0.9, 0.9)), 60)
    for _ in range(n_defs):
        lines += ["", ""]
        lines += _class(rng) if rng.random() < 0.3 else _function(rng)
    if kind == "script":
        lines += ["", "", 'if __name__ == "__main__":', "    parser = argparse.ArgumentParser()" if "argparse" in header else "    import argparse", f"    {_fname(rng)}(sys.argv[1:])" if "sys" in header else "    pass"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- Keras modules

# import form -> (header, layers prefix, models prefix, losses prefix, Input)
IMPORT_FORMS: dict[str, tuple[str, str, str, str, str]] = {
    "tf": ("import tensorflow as tf\n", "tf.keras.layers.", "tf.keras.", "tf.keras.losses.", "tf.keras.Input"),
    "from_tf_keras": ("import tensorflow as tf\nfrom tensorflow import keras\n", "keras.layers.", "keras.", "keras.losses.", "keras.Input"),
    "keras3": ("import keras\nfrom keras import ops\n", "keras.layers.", "keras.", "keras.losses.", "keras.Input"),
    "from_keras_layers": ("import tensorflow as tf\nfrom tensorflow.keras import layers, losses, models\n", "layers.", "models.", "losses.", "layers.Input"),
    "direct": (
        "import tensorflow as tf\n"
        "from tensorflow.keras.layers import Embedding, Masking, LSTM, GRU, Dense, Dropout, TimeDistributed, Bidirectional, GlobalAveragePooling1D, Input\n"
        "from tensorflow.keras.models import Sequential, Model\n"
        "from tensorflow.keras.losses import SparseCategoricalCrossentropy, CategoricalCrossentropy, Loss, sparse_categorical_crossentropy\n",
        "", "", "", "Input",
    ),
    "alias_K": ("import tensorflow as tf\nfrom tensorflow import keras as K\n", "K.layers.", "K.", "K.losses.", "K.Input"),
    "alias_L": ("import tensorflow as tf\nimport tensorflow.keras.layers as L\nimport tensorflow.keras.losses as KL\nfrom tensorflow.keras import Model, Sequential\n", "L.", "", "KL.", "L.Input"),
    "tf_keras": ("import tf_keras as keras\n", "keras.layers.", "keras.", "keras.losses.", "keras.Input"),
    "try_except": ("try:\n    import keras\nexcept ImportError:  # older stacks\n    from tensorflow import keras\n", "keras.layers.", "keras.", "keras.losses.", "keras.Input"),
    "assign_alias": ("import tensorflow as tf\n\nlayers = tf.keras.layers\nlosses = tf.keras.losses\n", "layers.", "tf.keras.", "losses.", "layers.Input"),
}
IMPORT_WEIGHTS = {"tf": 4, "from_tf_keras": 4, "keras3": 4, "from_keras_layers": 4, "direct": 3, "alias_K": 1, "alias_L": 1, "tf_keras": 1, "try_except": 1, "assign_alias": 1}

MASKS = {"mask_zero": 5, "mask_zero_false": 2, "none": 2, "masking": 2, "mask_zero_positional_k3": 0.3}
MIDDLES = {"rnn_seq": 5, "rnn_last": 2, "pool": 1, "bidi_seq": 1, "timedistributed": 1}
MODELS = {"sequential": 4, "sequential_add": 2, "functional": 3, "subclassed": 2, "builder": 2}
LOSSES = {
    "str_kw": 6, "str_pos": 2, "str_other": 1, "class": 3, "function": 1, "dict": 1,
    "custom_fn": 2, "custom_loss_class": 1, "variable": 1,
}


def _pick(rng: random.Random, weights: dict[str, float]) -> str:
    keys = list(weights)
    return rng.choices(keys, weights=[weights[k] for k in keys])[0]


def generate_keras_module(rng: random.Random) -> tuple[str, dict]:
    """One Keras training script; returns (source, choices)."""
    imp = _pick(rng, IMPORT_WEIGHTS)
    header, L, M, LS, INPUT = IMPORT_FORMS[imp]
    mask = _pick(rng, MASKS)
    middle = _pick(rng, MIDDLES)
    style = _pick(rng, MODELS)
    loss = _pick(rng, LOSSES)
    if mask == "mask_zero_positional_k3" and imp != "keras3":
        mask = "mask_zero"
    V, D, H = rng.choice((5000, 10000, 20000, 32000)), rng.choice((64, 128, 256)), rng.choice((64, 128, 256, 512))
    rnn = rng.choice(("LSTM", "GRU"))
    seq = M + "Sequential" if imp != "alias_L" else "Sequential"
    model_cls = M + "Model" if imp != "alias_L" else "Model"

    if mask == "mask_zero":
        first = f"{L}Embedding({V}, {D}, mask_zero=True)"
    elif mask == "mask_zero_positional_k3":
        first = f"{L}Embedding({V}, {D}, 'uniform', None, None, True)"
    elif mask == "mask_zero_false":
        first = f"{L}Embedding(input_dim={V}, output_dim={D}, mask_zero=False)"
    elif mask == "none":
        first = f"{L}Embedding({V}, {D})"
    else:  # masking: float features padded with 0.0
        first = f"{L}Masking(mask_value=0.0, input_shape=(None, {D}))"
    if middle == "rnn_seq":
        mids = [f"{L}{rnn}({H}, return_sequences=True)", f"{L}Dropout({rng.choice((0.1, 0.2, 0.3))})"]
    elif middle == "rnn_last":
        mids = [f"{L}{rnn}({H})"]
    elif middle == "pool":
        mids = [f"{L}GlobalAveragePooling1D()"]
    elif middle == "bidi_seq":
        mids = [f"{L}Bidirectional({L}{rnn}({H}, return_sequences=True))"]
    else:
        mids = [f"{L}{rnn}({H}, return_sequences=True)"]
    out = f"{L}TimeDistributed({L}Dense({V}))" if middle == "timedistributed" else f"{L}Dense({V}, activation={rng.choice(('None', repr('softmax')))})"
    layer_exprs = [first] + mids + [out]
    masked = mask in ("mask_zero", "mask_zero_positional_k3", "masking")
    reaches = masked and middle not in ("rnn_last", "pool")

    lines = [f'"""Train a {rnn} language model ({" ".join(rng.choice(WORDS) for _ in range(3))})."""', "", "import math", "import numpy as np", header.rstrip("\n"), ""]
    lines += [f"VOCAB_SIZE = {V}", f"EMBED_DIM = {D}", f"BATCH_SIZE = {rng.choice((16, 32, 64))}", ""]

    # custom loss helpers
    if loss == "custom_fn":
        if imp in ("keras3", "tf_keras", "try_except"):
            ops = "ops." if imp == "keras3" else "keras.ops."
            cast, total = f"{ops}cast", f"{ops}sum"
        else:
            cast, total = "tf.cast", "tf.reduce_sum"
        scce = "sparse_categorical_crossentropy" if imp == "direct" else f"{LS}sparse_categorical_crossentropy"
        lines += [
            "",
            "def masked_loss(y_true, y_pred):",
            f"    per_token = {scce}(y_true, y_pred, from_logits=True)",
            f"    mask = {cast}(y_true != 0, per_token.dtype)",
            f"    return {total}(per_token * mask) / {total}(mask)",
            "",
        ]
    if loss == "custom_loss_class":
        base = "Loss" if imp == "direct" else f"{LS}Loss"
        lines += [
            "",
            f"class TokenLoss({base}):",
            "    def call(self, y_true, y_pred):",
            f"        return {'sparse_categorical_crossentropy' if imp == 'direct' else LS + 'sparse_categorical_crossentropy'}(y_true, y_pred)",
            "",
        ]

    # model
    body: list[str] = []
    if style in ("sequential", "builder"):
        inner = ",\n        ".join(layer_exprs)
        body = [f"model = {seq}(", "    [", f"        {inner},", "    ]", ")"]
    elif style == "sequential_add":
        body = [f"model = {seq}()"] + [f"model.add({e})" for e in layer_exprs]
    elif style == "functional":
        if mask == "masking":
            body = [f"inputs = {INPUT}(shape=(None, {D}))"]
        else:
            body = [f"inputs = {INPUT}(shape=(None,), dtype=\"int32\")"]
        prev = "inputs"
        for i, e in enumerate(layer_exprs):
            body.append(f"x{i} = {e}({prev})")
            prev = f"x{i}"
        body.append(f"model = {model_cls}(inputs, {prev}, name={_ident(rng, 1)!r})")
    if style == "subclassed":
        lines += ["", f"class {rnn}LanguageModel({model_cls}):", "    def __init__(self, **kwargs):", "        super().__init__(**kwargs)"]
        for i, e in enumerate(layer_exprs):
            lines.append(f"        self.layer_{i} = {e}")
        lines += ["", "    def call(self, inputs, training=False):", "        x = inputs"]
        for i in range(len(layer_exprs)):
            lines.append(f"        x = self.layer_{i}(x)")
        lines += ["        return x", ""]
        body = [f"model = {rnn}LanguageModel()"]

    # loss expression
    stock = True
    sfn = "" if imp == "direct" else LS
    if loss == "str_kw" or loss == "str_pos":
        loss_src = repr("sparse_categorical_crossentropy")
    elif loss == "str_other":
        loss_src = repr(rng.choice(STOCK_LOSS_STRINGS[1:]))
    elif loss == "class":
        loss_src = f"{sfn}SparseCategoricalCrossentropy(from_logits=True)"
    elif loss == "function":
        loss_src = f"{sfn}sparse_categorical_crossentropy"
    elif loss == "dict":
        loss_src = "{" + repr(_ident(rng, 1)) + ": 'sparse_categorical_crossentropy'}"
    elif loss == "custom_fn":
        loss_src, stock = "masked_loss", False
    elif loss == "custom_loss_class":
        loss_src, stock = "TokenLoss()", False
    else:  # variable holding a stock loss object
        body.append(f"loss_fn = {sfn}SparseCategoricalCrossentropy(from_logits=True)")
        loss_src = "loss_fn"
    if loss == "str_pos":
        compile_line = f"model.compile({rng.choice(('adam', 'rmsprop'))!r}, {loss_src}, metrics=['accuracy'])"
    else:
        compile_line = f"model.compile(optimizer={rng.choice(('adam', 'rmsprop', 'sgd'))!r}, loss={loss_src}, metrics=['accuracy'])"

    if style == "builder":
        lines += ["", f"def build_model(vocab_size={V}):"] + ["    " + b for b in body] + ["    " + compile_line, "    return model", ""]
        main_model = ["model = build_model()"]
    else:
        main_model = body + [compile_line]

    # data + training
    lines += [
        "",
        "def load_data(path, maxlen=None):",
        '    """Read whitespace-tokenised lines and pad them with 0."""',
        "    with open(path) as fh:",
        "        rows = [[int(t) for t in line.split()] for line in fh]",
        "    maxlen = maxlen or max(len(r) for r in rows)",
        "    data = np.zeros((len(rows), maxlen), dtype='int32')",
        "    for i, row in enumerate(rows):",
        "        data[i, : len(row)] = row[:maxlen]",
        "    return data[:, :-1], data[:, 1:]",
        "",
        "",
        "def main(train_path, val_path, epochs=10):",
        "    x_train, y_train = load_data(train_path)",
        "    x_val, y_val = load_data(val_path, maxlen=x_train.shape[1] + 1)",
    ]
    lines += ["    " + s for s in main_model]
    lines += ["    history = model.fit(x_train, y_train, validation_data=(x_val, y_val), batch_size=BATCH_SIZE, epochs=epochs)"]
    extra = rng.random()
    if extra < 0.5:
        lines += [f"    perplexity = {rng.choice(('math.exp', 'np.exp'))}(history.history[{rng.choice(('loss', 'val_loss'))!r}][-1])", '    print(f"perplexity: {perplexity:.2f}")']
    elif extra < 0.7:
        lines += ["    val_loss = model.evaluate(x_val, y_val, verbose=0)", '    print("val perplexity", math.exp(val_loss[0]))']
    lines += ["    return model", "", ""]
    # some filler so Keras files have realistic size variance
    for _ in range(rng.randint(0, 4)):
        lines += _function(rng) + ["", ""]
    lines += ['if __name__ == "__main__":', "    import sys", "", "    main(*sys.argv[1:3])", ""]
    choices = {
        "import": imp, "mask": mask, "middle": middle, "model": style, "loss": loss,
        "stock": stock, "masked": masked, "reaches": reaches,
    }
    return "\n".join(lines), choices


# --------------------------------------------------------------------------- tree


def build_corpus(root: Path | str, n_files: int = 5000, seed: int = 20240601, keras_share: float = 0.2) -> list[CorpusFile]:
    """Write the corpus under ``root`` (which must be empty or absent); return the ``.py`` files."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    files: list[CorpusFile] = []
    n_keras = round(n_files * keras_share)
    slots = ["keras"] * n_keras + ["plain"] * (n_files - n_keras)
    rng.shuffle(slots)

    # directory layout: a handful of projects, each with nested packages
    projects = [f"project_{i:02d}" for i in range(max(1, n_files // 700))]
    dirs: list[str] = []
    for p in projects:
        for pkg in range(rng.randint(3, 8)):
            pkgname = f"{p}/src/{_ident(rng, 1)}_{pkg}"
            dirs.append(pkgname)
            for sub in range(rng.randint(0, 4)):
                dirs.append(f"{pkgname}/{_ident(rng, 1)}_{sub}")
        dirs.append(f"{p}/tests")
        dirs.append(f"{p}/scripts")
        dirs.append(f"{p}/notebooks_export")
    used: set[str] = set()
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)
    for p in projects:
        (root / p / "README.md").write_text(f"# {p}\n\nTrain with `python scripts/train.py`.\n")
        (root / p / "setup.cfg").write_text("[metadata]\nname = " + p + "\n")
        (root / p / "data.json").write_text('{"vocab_size": 5000, "loss": "sparse_categorical_crossentropy"}\n')

    for slot in slots:
        d = rng.choice(dirs)
        if slot == "keras":
            src, choices = generate_keras_module(rng)
            stem = rng.choice(("train", "model", "lm", "seq2seq", "tagger", "experiment"))
            cf = CorpusFile(
                "", True,
                kind="/".join(str(choices[k]) for k in ("import", "model", "mask", "middle", "loss")),
                masked_and_stock=choices["masked"] and choices["stock"],
                mask_reaches_output=choices["reaches"] and choices["stock"],
                tags=choices,
            )
        else:
            if d.endswith("/tests"):
                kind = "test"
            elif d.endswith("/scripts"):
                kind = "script"
            else:
                kind = rng.choices(("module", "init", "config", "torch", "script"), weights=(70, 12, 6, 6, 6))[0]
            src = generate_plain_module(rng, kind)
            stem = "__init__" if kind == "init" else ("test_" + _fname(rng) if kind == "test" else _fname(rng))
            cf = CorpusFile("", False, kind=kind)
        name = f"{d}/{stem}.py"
        i = 1
        while name in used:
            name = f"{d}/{stem}_{i}.py"
            i += 1
        used.add(name)
        data = src.encode("utf-8")
        (root / name).write_bytes(data)
        cf.relpath = name
        cf.size = len(data)
        files.append(cf)
    return files


def link_subset(root: Path, files: list[CorpusFile], dest: Path) -> None:
    """Mirror ``files`` (relative to ``root``) under ``dest`` with hard links (copies as a
    fallback), with each project's own non-Python files (setup.cfg ...) so that project roots
    are found the same way as in the corpus."""
    rels = [f.relpath for f in files]
    for project in sorted({r.split("/", 1)[0] for r in rels}):
        for extra in (root / project).iterdir():
            if extra.is_file():
                rels.append(f"{project}/{extra.name}")
    for rel in rels:
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(root / rel, target)
        except OSError:
            target.write_bytes((root / rel).read_bytes())


if __name__ == "__main__":  # quick look: python benchmarks/scan_corpus.py DIR [N]
    import sys

    out = Path(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
    fs = build_corpus(out, n)
    total = sum(f.size for f in fs)
    k = [f for f in fs if f.keras]
    print(f"{len(fs)} files, {total / 1e6:.1f} MB, {len(k)} Keras, {sum(f.masked_and_stock for f in k)} masked+stock")
