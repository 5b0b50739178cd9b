"""Interrupt, restart, input(), completion and inspection, display updates: over /ws."""

from __future__ import annotations

import time

from .conftest import GatewayServer, connect, result_of


async def test_interrupt_ends_the_run_and_keeps_state(server: GatewayServer) -> None:
    async with connect(server) as client:
        await client.run("kept = 'yes'")
        code = "print('started', flush=True)\nimport time\ntime.sleep(30)"
        await client.send({"type": "execute_code", "code": code, "id": "long"})
        await client.until(lambda f: f.get("id") == "long" and f["type"] == "output")  # it runs
        await client.send({"type": "execute_code", "code": "print('after')", "id": "queued"})
        sent = time.monotonic()
        await client.send({"type": "interrupt"})
        frames = await client.until(lambda f: f["type"] == "execution_result" and f["id"] == "long")
        assert time.monotonic() - sent < 2
        result = frames[-1]
        assert result["status"] == "interrupted"
        assert any("KeyboardInterrupt" in line for line in result["outputs"][-1]["traceback"])
        queued = await client.until(lambda f: f["type"] == "execution_result" and f["id"] == "queued")
        assert queued[-1]["output"] == ["after"]
        assert result_of(await client.run("print(kept)"))["output"] == ["yes"]


async def test_an_interrupt_sent_with_its_run_stops_it(server: GatewayServer) -> None:
    # Before the kernel runs the code, an interrupt is lost; just after it starts, one can
    # land in ipykernel's own code, which drops its reply. Either way, the run must end.
    async with connect(server) as client:
        await client.send({"type": "execute_code", "code": "import time\ntime.sleep(30)", "id": "long"})
        await client.send({"type": "interrupt"})
        frames = await client.until(lambda f: f["type"] == "execution_result" and f["id"] == "long", 10)
        assert frames[-1]["status"] == "interrupted"


async def test_restart_loses_state_and_says_so(server: GatewayServer) -> None:
    async with connect(server) as client:
        await client.run("lost = 1")
        await client.send({"type": "execute_code", "code": "import time\ntime.sleep(30)", "id": "running"})
        await client.send({"type": "execute_code", "code": "print('never')", "id": "waiting"})
        await client.until(lambda f: f.get("id") == "running" and f.get("execution_state") == "busy")
        await client.send({"type": "restart"})
        frames = await client.until(lambda f: f["type"] == "status" and f["execution_state"] == "idle" and f.get("state_lost"))
        # session-level frames and the cancelled results may arrive in either order
        while sum(f["type"] == "execution_result" for f in frames) < 2:
            frames.append(await client.recv())
        statuses = [f["execution_state"] for f in frames if f["type"] == "status" and "id" not in f]
        assert statuses[-2:] == ["restarting", "idle"]
        results = {f["id"]: f for f in frames if f["type"] == "execution_result"}
        assert results["running"]["status"] == "cancelled" and results["waiting"]["status"] == "cancelled"
        after = result_of(await client.run("print('lost' in dir())"))
        assert after["output"] == ["False"] and after["execution_count"] == 1


async def test_input_is_answered_over_the_socket(server: GatewayServer) -> None:
    async with connect(server) as client:
        await client.send({"type": "execute_code", "code": "name = input('Name? ')\nprint('hi', name)", "id": "in"})
        frames = await client.until(lambda f: f["type"] == "input_request")
        assert frames[-1]["prompt"] == "Name? " and frames[-1]["password"] is False and frames[-1]["id"] == "in"
        await client.send({"type": "input_reply", "value": "Ada"})
        result = (await client.until(lambda f: f["type"] == "execution_result"))[-1]
        assert result["output"] == ["hi Ada"]


async def test_getpass_asks_for_a_password(server: GatewayServer) -> None:
    async with connect(server) as client:
        await client.send({"type": "execute_code", "code": "import getpass\nsecret = getpass.getpass('PIN: ')\nprint(len(secret))", "id": "pw"})
        frame = (await client.until(lambda f: f["type"] == "input_request"))[-1]
        assert frame["password"] is True
        await client.send({"type": "input_reply", "value": "1234"})
        assert (await client.until(lambda f: f["type"] == "execution_result"))[-1]["output"] == ["4"]


async def test_unanswered_input_ends_at_the_time_out(server: GatewayServer) -> None:
    async with connect(server) as client:
        frames = await client.run("input('never answered')", wait=30, timeout=1)
        assert result_of(frames)["status"] == "timeout"


async def test_completion_of_import_o_offers_os(server: GatewayServer) -> None:
    async with connect(server) as client:
        await client.send({"type": "complete", "code": "import o", "cursor_pos": 8, "id": "c"})
        frame = (await client.until(lambda f: f["type"] == "completion"))[-1]
        assert "os" in frame["matches"] and frame["id"] == "c"
        assert frame["cursor_start"] == 7 and frame["cursor_end"] == 8


async def test_inspection_of_len(server: GatewayServer) -> None:
    async with connect(server) as client:
        await client.send({"type": "inspect", "code": "len", "cursor_pos": 3, "id": "i"})
        frame = (await client.until(lambda f: f["type"] == "inspection"))[-1]
        assert frame["found"] is True
        assert "Return the number of items" in frame["data"]["text/plain"]


async def test_completion_answers_while_code_runs(server: GatewayServer) -> None:
    async with connect(server) as client:
        await client.send({"type": "execute_code", "code": "import time\ntime.sleep(5)", "id": "busy"})
        await client.until(lambda f: f.get("id") == "busy" and f.get("execution_state") == "busy")
        sent = time.monotonic()
        await client.send({"type": "complete", "code": "import o", "id": "c"})
        frames = await client.until(lambda f: f["type"] in ("completion", "execution_result"))
        assert frames[-1]["type"] == "completion", "completion waited for the execution"
        assert time.monotonic() - sent < 3
        assert all(f.get("id") == "c" for f in frames if f["type"] == "completion")
        await client.send({"type": "interrupt"})
        await client.until(lambda f: f["type"] == "execution_result")


async def test_redrawn_progress_ends_as_its_last_state(server: GatewayServer) -> None:
    code = (
        "from IPython.display import clear_output\n"
        "for i in range(5):\n"
        "    clear_output(wait=True)\n"
        "    print(f'progress {i*25}%')\n"
    )
    async with connect(server) as client:
        frames = await client.run(code)
        assert sum(f["type"] == "clear_output" for f in frames) == 5
        result = result_of(frames)
        assert result["outputs"] == [{"output_type": "stream", "name": "stdout", "text": "progress 100%\n"}]
        assert result["output"] == ["progress 100%"]


async def test_update_display_rewrites_the_output(server: GatewayServer) -> None:
    code = (
        "from IPython.display import display\n"
        "h = display('step 1', display_id=True)\n"
        "h.update('step 2')\n"
        "h.update('done')\n"
    )
    async with connect(server) as client:
        frames = await client.run(code)
        updates = [f for f in frames if f["type"] == "update_display_data"]
        assert [u["output"]["data"]["text/plain"] for u in updates] == ["'step 2'", "'done'"]
        result = result_of(frames)
        assert [o["data"]["text/plain"] for o in result["outputs"]] == ["'done'"]


async def test_bad_interactive_messages_get_errors(server: GatewayServer) -> None:
    async with connect(server) as client:
        await client.send({"type": "complete", "id": "x"})
        frame = await client.recv()
        assert frame["type"] == "error" and "code" in frame["message"]
        await client.send({"type": "input_reply", "id": "y"})
        frame = await client.recv()
        assert frame["type"] == "error" and "value" in frame["message"]
