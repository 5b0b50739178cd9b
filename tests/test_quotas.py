"""Each client's share: a client at its quota gets 429 while another still gets sessions."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import websockets

from .conftest import GatewayServer

ALICE, BOB = "alice-token-0123456789", "bob-token-9876543210"


@pytest.fixture(scope="module")
def shared() -> Iterator[GatewayServer]:
    # Two clients: by default each may have half of max_sessions and max_kernels.
    srv = GatewayServer(
        pool_size=1, session_grace_s=0, tokens={"alice": ALICE, "bob": BOB},
        max_sessions=4, max_kernels=6, client_starts_per_minute=5,
    )
    yield srv
    assert not srv.stop()


def as_(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_a_client_at_its_quota_is_refused_while_another_is_served(shared: GatewayServer) -> None:
    async with httpx.AsyncClient(base_url=shared.url, timeout=60) as http:
        alice = [(await http.post("/sessions", json={"language": "python"}, headers=as_(ALICE))).json()["id"] for _ in range(2)]
        full = await http.post("/sessions", headers=as_(ALICE))
        assert full.status_code == 429 and "client_max_sessions" in full.json()["detail"]
        assert full.headers["retry-after"]
        async with websockets.connect(f"{shared.ws_url}/ws", additional_headers=as_(ALICE), open_timeout=30) as ws:
            await ws.recv()  # the error frame
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await ws.recv()
            assert closed.value.rcvd.code == 1013
        bob = (await http.post("/sessions", headers=as_(BOB)))
        assert bob.status_code == 201, "the other client is locked out too"

        # Kernels: a second language counts; past the share, the run is refused, not lost.
        bash = {"code": "echo hi", "language": "bash"}
        first = (await http.post(f"/sessions/{alice[0]}/execute", json=bash, headers=as_(ALICE))).json()
        assert first["output"] == ["hi"]
        second = (await http.post(f"/sessions/{alice[1]}/execute", json=bash, headers=as_(ALICE))).json()
        assert second["status"] == "error" and "client_max_kernels" in second["reason"]
        assert (await http.delete(f"/sessions/{alice[1]}", headers=as_(ALICE))).status_code == 204

        # Starts per minute: alice has taken 3 kernels (2 sessions and bash; what was refused
        # took none); two more, then no more for a minute. Bob's one-shots go on.
        for _ in range(2):
            assert (await http.post("/execute", json={"code": "print(1)"}, headers=as_(ALICE))).json()["output"] == ["1"]
        limited = await http.post("/execute", json={"code": "print(1)"}, headers=as_(ALICE))
        assert limited.status_code == 429 and "client_starts_per_minute" in limited.json()["detail"]
        await http.post(f"/sessions/{alice[0]}/execute", json={"code": "kept = 1"}, headers=as_(ALICE))
        restart = await http.post(f"/sessions/{alice[0]}/restart", headers=as_(ALICE))
        assert restart.status_code == 429, "a restart takes a kernel too"
        after = (await http.post(f"/sessions/{alice[0]}/execute", json={"code": "print(kept)"}, headers=as_(ALICE))).json()
        assert after["output"] == ["1"], "a refused restart stopped nothing"
        assert (await http.post("/execute", json={"code": "print(2)"}, headers=as_(BOB))).json()["output"] == ["2"]
        for sid, token in ((alice[0], ALICE), (bob.json()["id"], BOB)):
            assert (await http.delete(f"/sessions/{sid}", headers=as_(token))).status_code == 204
