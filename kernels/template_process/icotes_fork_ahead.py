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
- The shell (ZMQInteractiveShell, with its magics, formatters, completer and the inline
  backend's hooks): ~20 ms and ~3 MB of pages of its own in each kernel. The first shape's is
  made here, and a kernel whose configuration is that shape's adopts it: IPythonKernel asks
  for the singleton, and gets this one. What the shell took from its process (cwd, $HOME's
  profile, environment, stdio, the kernel) is given it again in the kernel.

Only the standard library and ipykernel: this runs in the kernel environment's interpreter.
"""

from __future__ import annotations

import copy
import datetime
import gc
import os
import sys
from pathlib import Path
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
_shell: tuple[tuple[str, ...], dict[str, Any]] | None = None  # the shape the shell was made for, its config


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
        if _shell is None:
            _make_shell(found[0])


def _make_shell(shape: tuple[str, ...]) -> None:
    """The shell of kernels of this shape, made as IPythonKernel would make it."""
    global _shell
    config = _comparable(_parsed[shape][0])
    if config.get("HistoryManager", {}).get("hist_file") != ":memory:":
        return  # a history file would start its saving thread here, and the template forks only with one
    from ipykernel.compiler import XCachingCompiler
    from ipykernel.zmqshell import ZMQInteractiveShell
    try:
        ZMQInteractiveShell.instance(config=copy.deepcopy(_parsed[shape][0]), compiler_class=XCachingCompiler)
        hook_matplotlib()
    except Exception:  # kernels make their own, as without a template
        ZMQInteractiveShell.clear_instance()
        return
    _shell = (shape, config)
    gc.freeze()  # the shell's objects too: out of the collector's walks, shared


def hook_matplotlib() -> None:
    """The inline backend wires itself into the shell when imported (figures shown as PNG,
    drawn after each cell); in the template it was imported before any shell existed, so it
    is asked to now, as importing pyplot in a fresh kernel would."""
    backend = sys.modules.get("matplotlib_inline.backend_inline")
    if backend is not None:
        backend._enable_matplotlib_integration()


def _comparable(config: Any) -> dict[str, Any]:
    """A configuration as plain dicts, without the sections nothing set, the connection file,
    or the key ZMQInteractiveShell adds for tqdm: what decides whether a kernel's shell
    would be the one made ahead. Values that compare by identity (lazy ones) never match."""
    plain = _plain(config)
    kernel_app = plain.get("IPKernelApp", {})
    kernel_app.pop("connection_file", None)
    kernel_app.pop("tqdm", None)
    return {key: value for key, value in plain.items() if value != {}}


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    return {key: _plain(value) if isinstance(value, dict) else value for key, value in config.items()}


def initialize(app: Any, argv: list[str]) -> bool:
    """In the kernel: IPKernelApp.initialize(argv), with what was done ahead. True if the
    kernel adopted the shell made ahead (its inline backend is hooked in already)."""
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
    adopted = False
    if _shell is not None:
        init_kernel = app.init_kernel

        def init_kernel_adopting() -> None:
            nonlocal adopted
            from ipykernel.zmqshell import ZMQInteractiveShell
            premade = ZMQInteractiveShell._instance
            if found is None or found[0] != _shell[0] or _comparable(app.config) != _shell[1]:
                _discard_shell()  # another command line, or a config file says otherwise
            init_kernel()
            if premade is not None and app.kernel.shell is premade:
                _adopt(app)
                adopted = True

        app.init_kernel = init_kernel_adopting
    ipykernel.ipkernel.sys = _KernelSys(_modules)
    try:
        app.initialize(argv)
    finally:
        ipykernel.ipkernel.sys = sys
        vars(app).pop("parse_command_line", None)
        vars(app).pop("init_kernel", None)
    return adopted


def _discard_shell() -> None:
    """Leave the kernel to make its own shell, as without a template. What hook_matplotlib
    set up on the template's goes with it, to be set up again on the kernel's: pyplot's
    hook that draws after each cell, the inline backend's configurable (its config is the
    kernel's to give) and its note that figure formats were chosen, and the rcParams it
    replaced."""
    from ipykernel.zmqshell import ZMQInteractiveShell
    shell = ZMQInteractiveShell._instance
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.uninstall_repl_displayhook()
    backend = sys.modules.get("matplotlib_inline.backend_inline")
    if backend is not None:
        backend.matplotlib.rcParams.update(getattr(shell, "_saved_rcParams", {}))
        backend.InlineBackend.clear_instance()
        vars(backend.configure_inline_support).pop("current_backend", None)
    ZMQInteractiveShell.clear_instance()


def _adopt(app: Any) -> None:
    """Give the shell made in the template what it took from there that this kernel has
    differently, as IPythonKernel and InteractiveShell.__init__ would have."""
    kernel = app.kernel
    shell = kernel.shell
    shell.kernel = shell.parent = kernel
    shell.ipython_dir, shell.profile_dir = app.ipython_dir, app.profile_dir
    shell.starting_dir = os.getcwd()
    shell.init_environment()  # the kernel's environment replaced the template's
    shell.init_virtualenv()
    shell._orig_sys_module_state.update(stdin=sys.stdin, stdout=sys.stdout, stderr=sys.stderr, excepthook=sys.excepthook)
    history = shell.history_manager
    history.dir_hist[:] = [Path.cwd()]
    with history.db:
        history.db.execute("UPDATE sessions SET start=? WHERE session=?",
                           (datetime.datetime.now().isoformat(" "), history.session_number))
