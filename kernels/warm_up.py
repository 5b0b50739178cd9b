"""The throw-away cell a Python kernel runs before it is handed out (`Kernel.warm_up`).

It registers the kernel's side of the files API (files.py), then formats a value as the
displayhook formats a cell's result. IPython makes its display formatters on their first
use, so without this a kernel's first result paid for them: a pooled kernel's first `1+1`
took 5.3 ms of its own time (`execute_input` to `idle`) against 3.6 ms for its next; with
this, ~0.8 ms more, about what any cell pays when it wakes an idle machine. The value is
formatted, not displayed: the user's namespace (`_`, `Out`) and history are as a fresh
kernel's.
"""

from __future__ import annotations

from collections.abc import Collection

from . import files

_FORMAT = "get_ipython().display_formatter.format(0) and None"  # the last line: None shows nothing


def python_warm_up(loaded: Collection[str]) -> str:
    """The cell, given the in-kernel modules (in_kernel/) the kernel's process has loaded."""
    return f"{files.warm_up_code(loaded)}\n{_FORMAT}"
