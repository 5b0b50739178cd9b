"""Code that runs inside kernels, in the kernel environment's interpreter: never imported by
the gateway. Each module here reaches a kernel as source: in a warm-up cell, or in a fork
template's start (fork_server.py), which loads it once for every kernel it forks."""

from __future__ import annotations

import functools
from pathlib import Path

FOR_TEMPLATES = ("icotes_files",)  # what a fork template loads ahead of its kernels


@functools.cache
def source(name: str) -> str:
    return (Path(__file__).parent / f"{name}.py").read_text()
