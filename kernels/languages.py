"""Which kernelspec runs a language."""

from __future__ import annotations

from jupyter_client.kernelspec import KernelSpecManager

from .errors import UnknownLanguage


class Languages:
    """Maps language names (`python`, `bash`) to installed kernelspec names."""

    def __init__(self, mapping: dict[str, str], default: str = "python") -> None:
        installed = set(KernelSpecManager().find_kernel_specs())
        self.specs = {lang: spec for lang, spec in mapping.items() if spec in installed}
        self.default = default

    def spec_for(self, language: str | None) -> str:
        language = (language or self.default).lower()
        try:
            return self.specs[language]
        except KeyError:
            raise UnknownLanguage(language, self.available) from None

    @property
    def available(self) -> list[str]:
        return sorted(self.specs)
