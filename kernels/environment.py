"""Kernel environments: where a kernelspec's program lives, and what of the host a confined
kernel must see to run it.

The notebook stack (numpy, pandas, matplotlib, ...) lives in an environment of its own, not
in the gateway's venv: `start.sh` builds it from `kernel-env/requirements.lock` at
`default_path()`, outside the checkout, so nothing a kernel sees names the gateway's files.
An operator's own venv or conda env works the same way.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

# A prebuilt matplotlib font cache, under an environment's prefix: kernels read it instead
# of each building its own in its fresh home (start.sh makes it for the shipped environment).
FONT_CACHE = Path("share") / "icotes" / "matplotlib"


def default_path() -> Path:
    """Where `start.sh` builds the shipped kernel environment."""
    if os.geteuid() == 0:
        return Path("/opt/icotes/kernel-env")
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "icotes" / "kernel-env"


def resolve_program(argv0: str) -> str:
    """A kernelspec's program as an absolute path (a bare name is looked up on PATH)."""
    if os.path.isabs(argv0):
        return argv0
    return shutil.which(argv0) or argv0


def prefix_of(program: str) -> Path:
    """The installation prefix a program belongs to: `<prefix>/bin/<program>`."""
    parent = Path(program).parent
    return parent.parent if parent.name == "bin" else parent


def mounts_for(program: str) -> list[str]:
    """The host directories a confined kernel needs, read-only, to run `program`: its
    environment's prefix, and for a venv the base interpreter its `python` links to.
    Everything under /usr is mounted anyway and not repeated."""
    found: list[Path] = [prefix_of(program), prefix_of(os.path.realpath(program))]
    venv_home = _venv_home(prefix_of(program))
    if venv_home is not None:
        found.append(prefix_of(os.path.join(os.path.realpath(venv_home), "python")))
    mounts: list[str] = []
    for path in found:
        text = str(path)
        if text == "/usr" or text.startswith("/usr/") or text == "/" or text in mounts:
            continue
        mounts.append(text)
    return mounts


def font_caches(program: str) -> list[Path]:
    """The prebuilt matplotlib font caches of the program's environment, if it has any."""
    folder = prefix_of(program) / FONT_CACHE
    try:
        return sorted(folder.glob("fontlist-*.json"))
    except OSError:
        return []


def _venv_home(prefix: Path) -> str | None:
    """The `home` of a venv's pyvenv.cfg: where its base interpreter lives."""
    try:
        lines = (prefix / "pyvenv.cfg").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        key, _, value = line.partition("=")
        if key.strip() == "home":
            return value.strip()
    return None
