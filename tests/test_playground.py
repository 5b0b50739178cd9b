"""`/playground` in a real browser: Debian's Chromium driven by Playwright. Code is typed into
cells and run; the rendered outputs are checked (text, ANSI colours, a traceback, a plot, HTML
in a sandboxed frame, display updates, clear_output), and so are input(), interrupt, restart,
language choice, run-all, the token prompt and a reconnect that replays what was missed."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright import sync_api as playwright_api

from .conftest import GatewayServer

CHROMIUM = shutil.which("chromium")
TOKEN = "playground-token"


@pytest.fixture(scope="module")
def playground_server() -> Iterator[GatewayServer]:
    srv = GatewayServer(pool_size=1, session_grace_s=30, token=TOKEN, kernel_uid_base=78500)
    yield srv
    assert not srv.stop()


@pytest.fixture(scope="module")
def page(playground_server: GatewayServer) -> Iterator[object]:
    assert CHROMIUM, "chromium is not installed (start.sh test installs it as root)"
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.set_default_timeout(30_000)
        page.goto(f"{playground_server.url}/playground")
        page.fill("#token-value", TOKEN)  # the server wants one: the page asks
        page.click("#token button")
        page.wait_for_selector("#state[data-state=idle]")
        yield page
        browser.close()


def _run(page: object, code: str, wait_for: str = "") -> object:
    """Type `code` into a new cell, run it, and wait for its result (or for `wait_for`)."""
    page.click("#add")
    cell = page.locator(".cell").last
    cell.locator("textarea").fill(code)
    cell.locator("button.run").click()
    if wait_for:
        cell.locator(".out").get_by_text(wait_for).first.wait_for()
    else:
        page.wait_for_function("el => !el.classList.contains('running')", arg=cell.element_handle())
    return cell


def test_root_links_browsers_to_the_playground(playground_server: GatewayServer) -> None:
    html = httpx.get(f"{playground_server.url}/", headers={"Accept": "text/html,*/*"})
    assert html.status_code == 200 and 'href="/playground"' in html.text
    api = httpx.get(f"{playground_server.url}/", headers={"Authorization": f"Bearer {TOKEN}"})
    assert api.json()["name"] == "icotes execution gateway"  # API clients keep their JSON
    assert httpx.get(f"{playground_server.url}/").status_code == 401


def test_text_colours_errors_and_run_all(page: object) -> None:
    cell = _run(page, "print('hello'); print('\\x1b[31mred\\x1b[0m plain')")
    assert cell.locator(".out pre").first.inner_text().startswith("hello")
    red = cell.locator(".out span", has_text="red")
    assert red.evaluate("el => getComputedStyle(el).color") == "rgb(192, 57, 43)"
    error = _run(page, "def f():\n    return 1/0\nf()")
    assert "ZeroDivisionError" in error.locator(".out .error").inner_text()
    assert error.locator(".out .error span").count() > 0  # the traceback's colours
    page.click("#add")
    page.locator(".cell textarea").last.fill("print(21 * 2)")
    page.click("#run-all")
    page.locator(".cell").last.locator(".out").get_by_text("42").first.wait_for()


def test_a_plot_html_in_a_sandbox_and_display_updates(page: object, tmp_path: Path) -> None:
    plot = _run(page, "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2]); plt.show()")
    image = plot.locator(".out img")
    assert image.get_attribute("src").startswith("data:image/png;base64,")
    assert image.evaluate("img => img.naturalWidth") > 100
    page.evaluate("document.title = 'playground'")
    html = _run(page, "from IPython.display import HTML\nHTML(\"<b>bold</b><script>parent.document.title='pwned'</script>\")")
    frame = html.locator(".out iframe")
    assert frame.get_attribute("sandbox") == ""
    assert page.frame_locator(".cell:last-child iframe").locator("b").inner_text() == "bold"
    assert page.title() == "playground"  # its script never ran against this page
    updated = _run(page, "h = display('first', display_id=True)\nimport time; time.sleep(0.3)\nh.update('second')")
    assert "second" in updated.locator(".out").inner_text() and "first" not in updated.locator(".out").inner_text()
    cleared = _run(page, "from IPython.display import clear_output\nprint('gone')\nclear_output()\nprint('kept')")
    assert cleared.locator(".out").inner_text().strip() == "kept"
    page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)
    assert (tmp_path / "playground.png").stat().st_size > 10_000


def test_input_interrupt_restart_and_language(page: object) -> None:
    asking = _run(page, "name = input('who? ')\nprint('hi', name)", wait_for="who?")
    asking.locator("input.input-reply").fill("Ada")
    asking.locator("input.input-reply").press("Enter")
    asking.locator(".out").get_by_text("hi Ada").first.wait_for()
    page.click("#add")
    cell = page.locator(".cell").last
    cell.locator("textarea").fill("import time\nfor i in range(60):\n    time.sleep(0.5)")
    cell.locator("button.run").click()
    page.wait_for_selector("#state[data-state=busy]")
    page.click("#interrupt")
    cell.locator(".out").get_by_text("KeyboardInterrupt").first.wait_for()
    _run(page, "kept = 1")
    page.click("#restart")
    page.wait_for_selector("#state[data-state=idle]")
    gone = _run(page, "kept")
    assert "NameError" in gone.locator(".out").inner_text()  # restarted: the state is gone
    page.select_option("#language", "bash")
    bash = _run(page, "echo hi-from-bash")
    assert "hi-from-bash" in bash.locator(".out").inner_text()
    page.select_option("#language", "python")


def test_a_dropped_connection_reconnects_and_replays(page: object) -> None:
    page.click("#add")
    cell = page.locator(".cell").last
    cell.locator("textarea").fill("import time\nfor i in range(6):\n    print(f'line {i}', flush=True)\n    time.sleep(0.4)")
    cell.locator("button.run").click()
    cell.locator(".out").get_by_text("line 0").first.wait_for()
    page.evaluate("state.ws.close()")  # the connection drops mid-run
    cell.locator(".out").get_by_text("line 5").first.wait_for()
    text = cell.locator(".out").inner_text()
    assert [line for line in text.splitlines() if line.startswith("line")] == [f"line {i}" for i in range(6)]
    page.wait_for_selector("#state[data-state=idle]")
