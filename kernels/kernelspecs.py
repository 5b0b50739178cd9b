"""The kernelspecs the gateway runs: the kernel environment's, then the configured ones.

Each is launched by the provisioner it names; one that names none, by the gateway's own
(provisioner.py), which confines it."""

from __future__ import annotations

import sys
from pathlib import Path

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

from . import forked_provisioner, provisioner
from .fork_server import forkable

# The names jupyter_client replaces with the gateway's own interpreter.
_BARE_PYTHON = {"python", f"python{sys.version_info[0]}", "python%i.%i" % sys.version_info[:2]}


def kernelspec_manager(kernel_env: str | None, kernelspec_dirs: list[str]) -> KernelSpecManager:
    """Kernelspecs of `kernel_env` (its share/jupyter/kernels) and of `kernelspec_dirs`, in
    that order; with neither, Jupyter's usual search path."""
    shipped = [str(Path(kernel_env) / "share" / "jupyter" / "kernels")] if kernel_env else []
    dirs = shipped + kernelspec_dirs
    specs = EnvironmentKernelSpecs(kernel_dirs=dirs, ensure_native_kernel=False) if dirs else EnvironmentKernelSpecs()
    specs.shipped_dirs = [Path(d) for d in shipped]
    return specs


class EnvironmentKernelSpecs(KernelSpecManager):
    """A kernelspec installed in an environment runs that environment's interpreter.

    ipykernel ships its kernelspec with a bare `python` as the program, which jupyter_client
    would replace with the interpreter of the process that launches it: here, the gateway,
    whose venv holds no kernel. A spec at `<prefix>/share/jupyter/kernels/<name>` runs
    `<prefix>/bin/python` instead.

    The kernel environment's own Python kernel, unless its spec names a provisioner, is
    forked from a template (forked_provisioner.py); every other spec is exec'd, confined.
    """

    shipped_dirs: list[Path] = []

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        spec = super().get_kernel_spec(kernel_name)
        python = _environment_python(Path(spec.resource_dir))
        if spec.argv and spec.argv[0] in _BARE_PYTHON and python is not None:
            spec.argv = [str(python), *spec.argv[1:]]
        if "kernel_provisioner" not in spec.metadata:
            # Local and confined; a spec that names a provisioner, even jupyter_client's
            # plain local one, is launched by that one, as its author asked.
            forked = forkable(spec.argv) and Path(spec.resource_dir).parent in self.shipped_dirs
            spec.metadata["kernel_provisioner"] = {"provisioner_name": forked_provisioner.NAME if forked else provisioner.NAME}
        return spec


def provisioner_of(spec: KernelSpec) -> str:
    return spec.metadata["kernel_provisioner"]["provisioner_name"]


def _environment_python(resource_dir: Path) -> Path | None:
    """`<prefix>/bin/python` for a spec at `<prefix>/share/jupyter/kernels/<name>`."""
    parents = resource_dir.parents
    if len(parents) < 4 or [p.name for p in parents[:3]] != ["kernels", "jupyter", "share"]:
        return None
    python = parents[3] / "bin" / "python"
    return python if python.exists() else None
