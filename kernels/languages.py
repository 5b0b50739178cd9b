"""Which kernelspec runs a language."""

from __future__ import annotations

import logging

from jupyter_client.kernelspec import KernelSpecManager

from . import forked_provisioner, provisioner
from .errors import UnknownLanguage
from .kernelspecs import provisioner_of

log = logging.getLogger(__name__)


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
