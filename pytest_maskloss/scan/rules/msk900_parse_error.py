"""MSK900 parse-error (given by the engine, not by a rule's ``check``)."""

from __future__ import annotations

from pytest_maskloss.scan.rules.base import Invalid


class ParseError:
    """The file cannot be read or parsed.

    ## What it does
    Reports a file the scanner cannot read as Python: a syntax error (with CPython's position
    and message when CPython rejects the text too), a binary or undecodable file, a bad coding
    cookie, an invalid notebook, a file over 8 MB, a path that is not a regular file (FIFOs,
    sockets), nesting too deep for CPython's parser, or an internal error of the scanner
    (reported with "please report it", never as a traceback). The scan goes on with the other
    files.

    Every file is read (decoded; notebooks loaded as JSON), so unreadable files are always
    reported; but a file the prefilter rules out (see [Speed](#speed)) is never parsed, so its
    syntax is not checked. CPython's parser looks at every file before libcst does, because
    libcst's native parser would overflow the C stack on very deep nesting. Known cost: libcst
    is slow on extremely long operator or call chains in one expression (thousands of chained
    `+`, `.attr` or `[0]` take tens of seconds).

    ## Why is this bad?
    A file that cannot be parsed cannot be checked: whatever it does to a masked loss goes
    unseen.

    In a notebook, cells are read as IPython runs them (magics, shell escapes, help syntax,
    pasted indents); the cells that are invalid even so are reported once per notebook, as a
    **warning** naming how many were skipped, and the other cells are analysed.

    Severity: **error** (a notebook's invalid cells: **warning**).

    ## Example
    ```python
    def f(:
        pass
    ```

    ## Use instead
    ```python
    def f():
        pass
    ```
    """

    code = "MSK900"
    name = "parse-error"
    summary = "the file cannot be read or parsed (syntax error, bad encoding, invalid notebook)"
    VALID = ["x = 1\n"]
    INVALID = [Invalid(code="def f(:\n    pass\n", fixed="def f():\n    pass\n")]
