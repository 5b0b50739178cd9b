"""The throw-away cell a Python kernel runs before it is handed out (`Kernel.warm_up`).

It registers the kernel's side of the files API (files.py), then formats a value as the
displayhook formats a cell's result. IPython makes its display formatters on their first
use, so without this a kernel's first result paid for them: a fresh kernel's first `1+1`
took ~2 ms more of the kernel's own time than its second (5.3 against 3.6 ms from `busy`
to `idle`), and with this it takes the same. The value is formatted, not displayed: the
user's namespace (`_`, `Out`) and history are as a fresh kernel's.
"""

from __future__ import annotations

from collections.abc import Collection

from . import files

_FORMAT = "get_ipython().display_formatter.format(0) and None"  # the last line: None shows nothing


def python_warm_up(loaded: Collection[str]) -> str:
    """The cell, given the in-kernel modules (in_kernel/) the kernel's process has loaded."""
    return f"{files.warm_up_code(loaded)}\n{_FORMAT}"
