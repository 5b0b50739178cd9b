"""Which kernelspec runs a language."""

from __future__ import annotations

import logging
import re

from jupyter_client.kernelspec import KernelSpecManager

from . import forked_provisioner, provisioner
from .errors import UnknownLanguage, UnreadableCode
from .kernelspecs import provisioner_of

log = logging.getLogger(__name__)

# Languages whose kernels feed code to a terminal, keystroke by keystroke.
_TERMINAL_LANGUAGES = {"bash"}
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class Languages:
    """Maps language names (`python`, `bash`) to installed kernelspec names."""

    def __init__(self, mapping: dict[str, str], default: str = "python", specs: KernelSpecManager | None = None) -> None:
        self.manager = specs or KernelSpecManager()
        installed = self.manager.get_all_specs()
        self.specs = {lang: spec for lang, spec in mapping.items() if spec in installed}
        # kernelspec name -> its kernel.json (language, display_name, ...) and resource dir
        self.kernelspecs = {name: installed[name] for name in set(self.specs.values())}
        self.default = default
        for name in self.kernelspecs:
            if (launcher := self.provisioner(name)) not in (provisioner.NAME, forked_provisioner.NAME):
                log.warning("kernelspec %s: launched by %s, without the gateway's confinement", name, launcher)

    def provisioner(self, spec_name: str) -> str:
        """The provisioner that launches `spec_name`'s kernels."""
        return provisioner_of(self.manager.get_kernel_spec(spec_name))

    def check_code(self, spec_name: str, code: str) -> None:
        """Refuse what a terminal-driven kernel would take as keys: bash_kernel types code
        into an interactive bash, where Ctrl-V quotes the newline, Ctrl-R starts a search,
        Esc begins a key sequence..., and bash then waits for input that never comes (the
        run would hang until its time-out)."""
        if self.language_of(spec_name) in _TERMINAL_LANGUAGES and (bad := _CONTROL.search(code)):
            raise UnreadableCode(
                f"{self.language_of(spec_name)} code may not contain control characters other than tab "
                f"and newline (found U+{ord(bad.group()):04X}): its kernel reads code as typed keys"
            )

    def language_of(self, spec_name: str) -> str:
        return self.kernelspecs[spec_name]["spec"]["language"]

    def spec_for(self, language: str | None) -> str:
        language = (language or self.default).lower()
        try:
            return self.specs[language]
        except KeyError:
            raise UnknownLanguage(language, self.available) from None

    @property
    def available(self) -> list[str]:
        return sorted(self.specs)
