"""The session store replicas share (Redis, `GATEWAY_STORE_URL`): who is alive, which replica
serves each session, what it takes to attach to its kernels, and its frames.

Keys, all under `icg:`:

- `replica:<id>`: the replica's address, with a time to live its heartbeat renews
  (heartbeat.py): gone, the replica is dead. `replicas`: the ids of every replica that ever served here.
- `session:<id>`: a hash: `owner`, `replica` (its holder), `spec`, `owned_by_socket`,
  `seq_reserved` (no frame of it has a higher seq), `kernels` (sealed: connection keys
  let whoever reads them run code, and tenants' kernels may reach the store's network),
  `kernel_ids` (its remote kernels').
  `ended`: why it ended, kept a while so its clients can be told.
- `held:<replica id>`: the sessions a replica holds; `owned:<owner>`: a client's sessions;
  `sessions`: every live session.
- `frames:<id>`: the session's frames, a stream with entry ids `0-<seq>`, bounded.
- `notebook:<id>`: a Jupyter session (`/api/sessions`: a notebook's path bound to a kernel,
  which is one of our sessions), as JSON; `notebooks:<owner>`: a client's.
- `kernels:<replica id>`: every remote kernel a replica has (pooled, starting, in its
  sessions), kernel id -> sealed handoff info, recorded as soon as the engine reports it
  launched. A claim moves the session's kernels to the claimer's; what is left when a dead
  replica has no session is shut down by whoever finds it: nobody else could reach it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import redis.asyncio as redis
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

log = logging.getLogger("gateway")

_P = "icg:"
_ENDED_TTL_S = 3600  # an ended session's reason is kept this long
_FLUSH_S = 0.02  # frames are written this long after they are published, in one round trip
# Move `replica` from ARGV[1] to ARGV[2], only if it still is ARGV[1] (one replica wins),
# and the session's kernels with it. KEYS: session, held by from, held by to, the session
# id, kernels of from, kernels of to.
_CLAIM = """
if redis.call('hget', KEYS[1], 'replica') ~= ARGV[1] then return 0 end
redis.call('hset', KEYS[1], 'replica', ARGV[2])
redis.call('srem', KEYS[2], KEYS[4]); redis.call('sadd', KEYS[3], KEYS[4])
local ids = redis.call('hget', KEYS[1], 'kernel_ids')
if ids then
  for id in string.gmatch(ids, '[^,]+') do
    local info = redis.call('hget', KEYS[5], id)
    if info then redis.call('hset', KEYS[6], id, info); redis.call('hdel', KEYS[5], id) end
  end
end
return 1
"""


@dataclass
class SessionRecord:
    owner: str
    replica: str
    spec: str
    owned_by_socket: bool
    seq_reserved: int
    kernels: list[dict[str, Any]]  # each: spec, remote, and (remote) what handoff.attach needs
    ended: str | None = None

    @property
    def kernel_ids(self) -> str:
        return ",".join(k["saved"]["kernel_id"] for k in self.kernels if k["remote"])


class Store:
    def __init__(self, url: str, secret: str, replica_id: str, log_frames: int) -> None:
        self.replica_id = replica_id
        self._redis = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._aead = AESGCM(hashlib.sha256(secret.encode()).digest())
        self._log_frames = log_frames
        self._pending: list[tuple[str, int, str]] = []
        self._flushing: asyncio.Task[None] | None = None
        self._claim = self._redis.register_script(_CLAIM)

    async def close(self) -> None:
        await self.flush()
        await self._redis.aclose()

    # -- replicas ----------------------------------------------------------------------

    async def address_of(self, replica_id: str) -> str | None:
        """Where a live replica is; None when it is dead."""
        value = await self._redis.get(_P + "replica:" + replica_id)
        return value.decode() if value is not None else None

    async def known(self, replica_id: str) -> bool:
        """Whether the replica has beaten since the store began (a store restarted empty
        knows no replica until it beats again: its silence then is not death)."""
        return bool(await self._redis.sismember(_P + "replicas", replica_id))

    async def dead_replicas(self) -> list[str]:
        ids = [i.decode() for i in await self._redis.smembers(_P + "replicas")]
        alive = await self._redis.mget([_P + "replica:" + i for i in ids]) if ids else []
        return [i for i, a in zip(ids, alive) if a is None and i != self.replica_id]

    async def others_alive(self) -> bool:
        """Another replica beats now (one that could take this one's sessions over)."""
        ids = [i.decode() for i in await self._redis.smembers(_P + "replicas") if i.decode() != self.replica_id]
        return bool(ids) and any(a is not None for a in await self._redis.mget([_P + "replica:" + i for i in ids]))

    async def held_by(self, replica_id: str) -> list[str]:
        return [s.decode() for s in await self._redis.smembers(_P + "held:" + replica_id)]

    async def forget_replica(self, replica_id: str) -> None:
        await self._redis.srem(_P + "replicas", replica_id)

    async def add_kernels(self, kernels: dict[str, dict[str, Any]]) -> None:
        """This replica's remote kernels, by id: what it takes to reach each."""
        if kernels:
            sealed = {kernel_id: self._seal(kernel_id, info) for kernel_id, info in kernels.items()}
            await self._redis.hset(_P + "kernels:" + self.replica_id, mapping=sealed)

    async def kernel_count(self) -> int:
        return int(await self._redis.hlen(_P + "kernels:" + self.replica_id))

    async def drop_kernel(self, kernel_id: str) -> None:
        await self._redis.hdel(_P + "kernels:" + self.replica_id, kernel_id)

    async def take_kernels(self, replica_id: str) -> list[dict[str, Any]]:
        """A dead replica's remote kernels that no session took with it, taken once."""
        key = _P + "kernels:" + replica_id
        pipe = self._redis.pipeline()
        pipe.hgetall(key)
        pipe.delete(key)
        found, _ = await pipe.execute()
        return [self._open(k.decode(), v.decode()) for k, v in found.items()]

    # -- sessions ----------------------------------------------------------------------

    async def save(self, session_id: str, record: SessionRecord) -> None:
        pipe = self._redis.pipeline()
        # Not `seq_reserved`: reserve() alone raises it, so a late save cannot lower it.
        pipe.hset(_P + "session:" + session_id, mapping={
            "owner": record.owner, "replica": record.replica, "spec": record.spec,
            "owned_by_socket": int(record.owned_by_socket), "kernels": self._seal(session_id, record.kernels),
            "kernel_ids": record.kernel_ids,
        })
        pipe.sadd(_P + "held:" + record.replica, session_id)
        pipe.sadd(_P + "owned:" + record.owner, session_id)
        pipe.sadd(_P + "sessions", session_id)
        await pipe.execute()

    async def load(self, session_id: str) -> SessionRecord | None:
        raw = {k.decode(): v.decode() for k, v in (await self._redis.hgetall(_P + "session:" + session_id)).items()}
        if "owner" not in raw:
            return None
        return SessionRecord(
            owner=raw["owner"], replica=raw.get("replica", ""), spec=raw.get("spec", ""),
            owned_by_socket=raw.get("owned_by_socket") == "1", seq_reserved=int(raw.get("seq_reserved", 0)),
            kernels=self._open(session_id, raw["kernels"]) if "kernels" in raw else [], ended=raw.get("ended"),
        )

    async def claim(self, session_id: str, from_replica: str) -> bool:
        """Make this replica the session's holder, if `from_replica` still is."""
        keys = [
            _P + "session:" + session_id, _P + "held:" + from_replica, _P + "held:" + self.replica_id, session_id,
            _P + "kernels:" + from_replica, _P + "kernels:" + self.replica_id,
        ]
        return bool(await self._claim(keys=keys, args=[from_replica, self.replica_id]))

    async def end(self, session_id: str, replica_id: str, owner: str, reason: str | None) -> None:
        """The session is over: its frames go; with a `reason`, its owner is kept a while
        so a client that comes back learns why (without one, it simply no longer exists)."""
        key = _P + "session:" + session_id
        pipe = self._redis.pipeline()
        pipe.srem(_P + "held:" + replica_id, session_id)
        pipe.srem(_P + "sessions", session_id)
        pipe.srem(_P + "owned:" + owner, session_id)
        pipe.delete(_P + "frames:" + session_id)
        if reason is None:
            pipe.delete(key)
        else:
            pipe.hdel(key, "kernels", "replica")
            pipe.hset(key, "ended", reason)
            pipe.expire(key, _ENDED_TTL_S)
        await pipe.execute()

    async def count(self) -> int:
        return int(await self._redis.scard(_P + "sessions"))

    async def sessions_of(self, owner: str) -> int:
        """How many live sessions `owner` has, on every replica."""
        return int(await self._redis.scard(_P + "owned:" + owner))

    async def owned_by(self, owner: str) -> list[str]:
        return [s.decode() for s in await self._redis.smembers(_P + "owned:" + owner)]

    async def reserve(self, session_id: str, seq: int) -> None:
        """No frame of the session will have a seq above `seq` unless this is raised first:
        a replica taking the session over continues above it."""
        await self._redis.hset(_P + "session:" + session_id, "seq_reserved", seq)

    # -- Jupyter's notebook sessions ------------------------------------------------------

    async def save_notebook(self, notebook_id: str, owner: str, text: str) -> None:
        pipe = self._redis.pipeline()
        pipe.set(_P + "notebook:" + notebook_id, text)
        pipe.sadd(_P + "notebooks:" + owner, notebook_id)
        await pipe.execute()

    async def notebook(self, notebook_id: str) -> str | None:
        found = await self._redis.get(_P + "notebook:" + notebook_id)
        return found.decode() if found is not None else None

    async def notebooks_of(self, owner: str) -> list[str]:
        ids = [i.decode() for i in await self._redis.smembers(_P + "notebooks:" + owner)]
        found = await self._redis.mget([_P + "notebook:" + i for i in ids]) if ids else []
        return [f.decode() for f in found if f is not None]

    async def drop_notebook(self, notebook_id: str, owner: str) -> None:
        pipe = self._redis.pipeline()
        pipe.delete(_P + "notebook:" + notebook_id)
        pipe.srem(_P + "notebooks:" + owner, notebook_id)
        await pipe.execute()

    # -- frames ------------------------------------------------------------------------

    def append(self, session_id: str, seq: int, text: str) -> None:
        """Keep a published frame; written shortly, with the others published meanwhile."""
        self._pending.append((session_id, seq, text))
        if self._flushing is None:
            self._flushing = asyncio.ensure_future(self._flush_soon())

    async def _flush_soon(self) -> None:
        await asyncio.sleep(_FLUSH_S)
        self._flushing = None
        await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending:
            return
        pipe = self._redis.pipeline(transaction=False)
        for session_id, seq, text in pending:
            pipe.xadd(_P + "frames:" + session_id, {"f": text}, id=f"0-{seq}", maxlen=self._log_frames, approximate=True)
        try:
            await pipe.execute(raise_on_error=False)  # a session ended meanwhile: its frames are moot
        except redis.RedisError as exc:
            log.warning("store: %d frames not written: %s", len(pending), exc)

    async def frames(self, session_id: str) -> list[tuple[int, str]]:
        """The session's kept frames, oldest first: (seq, JSON text)."""
        entries = await self._redis.xrange(_P + "frames:" + session_id)
        return [(int(entry_id.split(b"-")[1]), fields[b"f"].decode()) for entry_id, fields in entries]

    # -- sealing -----------------------------------------------------------------------

    def _seal(self, session_id: str, value: Any) -> str:
        nonce = os.urandom(12)  # the session id is bound in: a sealed value fits no other session
        sealed = self._aead.encrypt(nonce, json.dumps(value).encode(), session_id.encode())
        return (nonce + sealed).hex()

    def _open(self, session_id: str, sealed: str) -> Any:
        raw = bytes.fromhex(sealed)
        return json.loads(self._aead.decrypt(raw[:12], raw[12:], session_id.encode()))
