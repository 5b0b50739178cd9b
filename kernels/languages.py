"""Which kernelspec runs a language."""

from __future__ import annotations

from jupyter_client.kernelspec import KernelSpecManager

from .errors import UnknownLanguage


class Languages:
    """Maps language names (`python`, `bash`) to installed kernelspec names."""

    def __init__(self, mapping: dict[str, str], default: str = "python", specs: KernelSpecManager | None = None) -> None:
        self.manager = specs or KernelSpecManager()
        installed = self.manager.get_all_specs()
        self.specs = {lang: spec for lang, spec in mapping.items() if spec in installed}
        # kernelspec name -> its kernel.json (language, display_name, ...) and resource dir
        self.kernelspecs = {name: installed[name] for name in set(self.specs.values())}
        self.default = default

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
