"""Work a fork template does once, ahead of its kernels, so that each forked kernel does less
(see icotes_fork_template.py and icotes_fork_child.py). Two costs of IPKernelApp.initialize()
that are the same in every kernel:

- IPythonKernel.__init__ reads every module's `__file__` (its debugger's list of library
  code): ~1300 module objects and strings spread over the template's heap, whose reference
  counts, once touched, copied ~6 MB of its pages into every child. A snapshot made here
  puts the same names and files together in a few pages.
- parse_command_line builds traitlets' argparse parser for every alias and flag: ~13 ms of a
  kernel's start. Each command line's shape (its connection file left out) is parsed here
  once, and a kernel of that shape takes a copy of the result.

Only the standard library and ipykernel: this runs in the kernel environment's interpreter.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

_CONNECTION_FILE = "{connection_file}"  # what stands for a kernel's own in a parsed shape


class _ModuleFile:
    __slots__ = ("__file__",)

    def __init__(self, file: str) -> None:
        self.__file__ = file


class _KernelSys:
    """`sys` as ipykernel.ipkernel sees it while the kernel is made: its modules are the
    template's snapshot, every other name the real one (that module only reads `sys`)."""

    def __init__(self, modules: dict[str, _ModuleFile]) -> None:
        self.modules = modules

    def __getattr__(self, name: str) -> object:
        return getattr(sys, name)


_modules: dict[str, _ModuleFile] = {}
_parsed: dict[tuple[str, ...], tuple[Any, list[str]]] = {}  # shape -> (cli_config, extra_args)


def snapshot_modules() -> None:
    """Once the template has imported."""
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str) and file:
            _modules[name] = _ModuleFile((file + "\0")[:-1])  # a copy, beside the others


def _shape(argv: list[str]) -> tuple[tuple[str, ...], str] | None:
    """`argv` with its connection file left out, and that file; None for a command line
    this does not parse ahead: help, version, a subcommand, no single `-f FILE`."""
    if not argv or not argv[0].startswith("-") or argv.count("-f") != 1:
        return None
    if any(arg in ("-h", "--help", "--help-all", "--version", "-V", "--") for arg in argv):
        return None
    at = argv.index("-f") + 1
    if at == len(argv):
        return None
    return (*argv[:at], _CONNECTION_FILE, *argv[at + 1:]), argv[at]


def parse_ahead(argv: list[str]) -> None:
    """In the template, before it forks a kernel whose command line is `argv`."""
    found = _shape(argv)
    if found is None or found[0] in _parsed:
        return
    from ipykernel.kernelapp import IPKernelApp
    app = IPKernelApp()  # not the instance: that is the kernel's, made in the child
    try:
        app.parse_command_line(list(found[0]))
    except BaseException:  # SystemExit included: the kernel parses it itself, and says why
        return
    if app.cli_config.IPKernelApp.get("connection_file") == _CONNECTION_FILE:
        _parsed[found[0]] = (app.cli_config, list(app.extra_args))


def initialize(app: Any, argv: list[str]) -> None:
    """In the kernel: IPKernelApp.initialize(argv), with what was done ahead."""
    import ipykernel.ipkernel
    found = _shape(argv)
    if found is not None and found[0] in _parsed:
        config, extra_args = _parsed[found[0]]

        def parse_command_line(argv: list[str] | None = None) -> None:
            # What traitlets' parse_command_line leaves, for this kernel's connection file.
            app.argv = list(argv or [])
            app.cli_config = copy.deepcopy(config)
            app.cli_config.IPKernelApp.connection_file = found[1]
            app.update_config(app.cli_config)
            app.extra_args = list(extra_args)

        app.parse_command_line = parse_command_line
    ipykernel.ipkernel.sys = _KernelSys(_modules)
    try:
        app.initialize(argv)
    finally:
        ipykernel.ipkernel.sys = sys
        vars(app).pop("parse_command_line", None)
