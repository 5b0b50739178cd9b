"""Opening a session: its first kernel, through its client's share, and its id."""

from __future__ import annotations

import logging
import secrets
import uuid

from .kernel import Kernel
from .languages import Languages
from .quotas import ClientQuota
from .session import Session

log = logging.getLogger(__name__)


async def open_session(
    quota: ClientQuota,
    languages: Languages,
    language: str | None = None,
    spec_name: str | None = None,
    env: dict[str, str] | None = None,
) -> Session:
    """A session on a pooled kernel; with `env`, on a kernel started for it with that env.

    Named neither a language nor a kernelspec, it starts on the default language's kernel
    and moves to the language of its first request (a bare /ws). Its kernels come through
    `quota`, its client's share."""
    chosen = language is not None or spec_name is not None
    if spec_name is None:
        spec_name = languages.spec_for(language)
    quota.open_session()
    try:
        kernel = await (quota.acquire_fresh(spec_name, env) if env else quota.acquire(spec_name))
    except BaseException:
        quota.session_closed()
        raise
    # 128 random bits (a session id must not be guessable), in the UUID shape Jupyter
    # clients expect of kernel ids; no version bits are set, so no bit is given away.
    session_id = str(uuid.UUID(bytes=secrets.token_bytes(16)))
    session = Session(session_id, spec_name, kernel, quota, languages, language_chosen=chosen)
    session.start()
    log.info("session %s: created (%s)", session_id, spec_name)
    return session


def restore_session(
    quota: ClientQuota, languages: Languages, session_id: str, primary: str, kernels: dict[str, Kernel]
) -> Session:
    """A session another gateway ran, on its kernels attached to here (kernels/handoff.py):
    the same id, the kernels' state intact. Counted in `quota`, never refused by it."""
    quota.adopt(len(kernels))
    session = Session(session_id, primary, kernels[primary], quota, languages)
    for spec_name, kernel in kernels.items():
        if spec_name != primary:
            session.kernels.add(spec_name, kernel)
    session.start()
    log.info("session %s: taken over (%s)", session_id, ", ".join(kernels))
    return session
