"""A replica's heartbeat in the store, from a thread of its own.

The heartbeat says the process lives, not that its event loop is quick: a loop held for a
second or two (a first import of an engine's provisioner, a burst of launches) must not
make the other replicas take this one's sessions over and kill its kernels. A thread, with
a blocking Redis client of its own, beats through such stalls (the interpreter switches
threads every few milliseconds); it stops only with the process, or when told to.
"""

from __future__ import annotations

import logging
import threading

import redis

log = logging.getLogger("gateway")

_P = "icg:"  # as in store.py


class Heartbeat:
    def __init__(self, url: str, replica_id: str, address: str, every_s: float, ttl_s: float) -> None:
        self._redis = redis.Redis.from_url(url, socket_timeout=every_s, socket_connect_timeout=every_s)
        self._key = _P + "replica:" + replica_id
        self._replica_id = replica_id
        self._address = address
        self._every_s = every_s
        self._ttl_ms = int(ttl_s * 1000)
        self._stop = threading.Event()
        self.reached = True  # whether the last beat reached the store
        self._thread = threading.Thread(target=self._run, name="replica-heartbeat", daemon=True)

    def beat(self) -> None:
        pipe = self._redis.pipeline()
        pipe.set(self._key, self._address, px=self._ttl_ms)
        pipe.sadd(_P + "replicas", self._replica_id)
        pipe.execute()

    def start(self) -> None:
        self.beat()  # the first one in the caller's thread: an unreachable store fails the start
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._redis.close()

    def _run(self) -> None:
        while not self._stop.wait(self._every_s):
            try:
                self.beat()
                self.reached = True
            except redis.RedisError as exc:
                if self.reached:
                    log.warning("store: heartbeat failed: %s", exc)
                self.reached = False
