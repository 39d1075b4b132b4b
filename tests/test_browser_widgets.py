"""The widgets in a real JupyterLab (headless Chromium, Debian's package, driven by
Playwright) with comms over kernel subshells on: every action a person takes, in sequence,
clicked; screenshots of each widget in the light and the dark theme are written to
screenshots/jupyter/ (kept out of git by .gitignore) for a person to look at."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from playwright.async_api import Locator, Page, async_playwright

from tests.conftest import free_port
from tests.lab import jupyterlab
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.asyncio
SHOTS = Path(__file__).resolve().parent.parent / "screenshots" / "jupyter"
TOKEN = "widgets-browser-test"

# ipykernel 7.4 sends a comm's messages back to the subshell that last wrote on it (for a
# widget made in a cell: the main thread); ipykernel 7.0 to 7.3 ran them on the subshell
# JupyterLab chose, the case issue 21 saw fail. The "subshell" run restores that routing, so
# every click arrives on a subshell thread with its own event loop; the "as-installed" run
# keeps the installed kernel's own routing.
ROUTING = {
    "subshell": (
        "from ipykernel.comm.comm import BaseComm\n\n"
        'if hasattr(BaseComm, "_reply_subshell_for"):\n'
        "    BaseComm._reply_subshell_for = lambda self, data, default: default\n"
    ),
    "as-installed": "",
}
SETUP = """\
import threading

import ipywidgets as w
from openai import AsyncOpenAI

import conduit_tornado
from conduit_jupyter.widgets import KeyManager, Playground, UsageDashboard

gw = await conduit_tornado.start(
    port=0,
    store="memory",
    config={
        "providers": [{"name": "mock", "type": "mock", "options": {"words": 8}}],
        "models": [
            {"name": "gpt-4o-mini", "deployments": [{"provider": "mock", "model": "m"}],
             "pricing": {"input_per_mtok": 150, "output_per_mtok": 600}},
            {"name": "claude-haiku", "deployments": [{"provider": "mock", "model": "m"}],
             "pricing": {"input_per_mtok": 800, "output_per_mtok": 4000}},
        ],
    },
)
made = await gw.admin.create_key(
    name="traffic", rpm=600, tpm=200000, max_budget=50, budget_duration="monthly",
    allowed_models=["gpt-4o-mini", "claude-*"],
)
client = AsyncOpenAI(base_url=gw.base_url, api_key=made["key"])
for model, n in (("gpt-4o-mini", 4), ("claude-haiku", 2)):
    for i in range(n):
        await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": f"question {i} " * 30}]
        )
print("traffic sent")
"""
KEYS = """\
km = KeyManager(gw)
await km.refresh()
where = w.Label()
subshells = get_ipython().kernel.shell_channel_thread.manager
km.refresh_button.on_click(
    lambda _: setattr(
        where,
        "value",
        f"handled on {threading.current_thread().name} ({subshells.list_subshell()})",
    )
)
display(km, where)
"""
DASH = "dash = UsageDashboard(gw)\nawait dash.refresh()\ndash"
PLAY = "pg = Playground(gw)\npg"


@pytest.fixture(params=list(ROUTING))
def lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[int]:
    """JupyterLab on loopback with comms over subshells switched on explicitly."""
    assert Path(CHROMIUM).exists(), "the browser test needs Debian's chromium"
    root = tmp_path / "lab"
    root.mkdir()
    book = nbformat.v4.new_notebook()
    setup = ROUTING[request.param] + SETUP
    book.cells = [nbformat.v4.new_code_cell(src) for src in (setup, KEYS, DASH, PLAY)]
    book.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nbformat.write(book, root / "widgets.ipynb")
    settings = tmp_path / "lab-settings" / "@jupyterlab"
    for folder, name, value in (
        ("apputils-extension", "kernels-settings", {"commsOverSubshells": "perCommTarget"}),
        ("apputils-extension", "notification", {"fetchNews": "false", "checkForUpdates": False}),
    ):
        (settings / folder).mkdir(parents=True, exist_ok=True)
        (settings / folder / f"{name}.jupyterlab-settings").write_text(json.dumps(value))
    port = free_port()
    env = {
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "lab-settings"),
        "HOME": str(tmp_path),
    }
    with jupyterlab(port, TOKEN, root, env):
        yield port


def text_input(page: Page, label: str) -> Locator:
    named = page.locator("label.widget-label", has_text=re.compile(f"^{re.escape(label)}$"))
    return (
        page.locator(".widget-text, .widget-textarea").filter(has=named).locator("input, textarea")
    )


def dropdown(page: Page, label: str) -> Locator:
    named = page.locator("label.widget-label", has_text=re.compile(f"^{re.escape(label)}$"))
    return page.locator(".widget-dropdown").filter(has=named).locator("select")


async def no_errors(page: Page) -> None:
    errors = page.locator(".conduit-error")
    assert await errors.count() == 0, await errors.all_inner_texts()


async def shoot(page: Page, theme: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    panels = page.locator(".conduit")
    for i, name in enumerate(("keys", "usage", "playground")):
        await panels.nth(i).scroll_into_view_if_needed()
        await panels.nth(i).screenshot(path=str(SHOTS / f"{name}-{theme}.png"))


@pytest.mark.timeout(420)
async def test_widgets_clicked_through_in_jupyterlab_with_subshells(
    lab: int, request: pytest.FixtureRequest
) -> None:
    routing = request.node.callspec.params["lab"]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            await drive(page, lab, routing)
        except Exception:
            SHOTS.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(SHOTS / "failed.png"), full_page=True)
            raise
        finally:
            await browser.close()


async def drive(page: Page, port: int, routing: str) -> None:
    await page.goto(f"http://127.0.0.1:{port}/lab/tree/widgets.ipynb?token={TOKEN}")
    await page.locator(".jp-Notebook").wait_for(timeout=90_000)
    await page.locator(".jp-StatusBar-TextItem", has_text="| Idle").wait_for(timeout=90_000)
    cells = page.locator(".jp-Notebook .jp-Cell")
    await cells.first.click()
    await page.keyboard.press("Escape")
    for _ in range(await cells.count()):
        await page.keyboard.press("Shift+Enter")
    await page.get_by_text("traffic sent").wait_for(timeout=90_000)
    await page.get_by_role("button", name="Send").wait_for(timeout=60_000)
    keys = page.locator(".conduit").nth(0)
    await keys.get_by_text("600 req/min, 200k tok/min").wait_for()
    await keys.get_by_text(re.compile(r"of \$50\.00 monthly, resets")).wait_for()

    # create
    await text_input(page, "Name").fill("browser-key")
    await text_input(page, "Requests per minute").fill("600")
    await text_input(page, "Expires").fill("30d")
    await keys.get_by_role("button", name="Create key").click()
    secret = keys.locator(".cd-secret", has_text="New key for browser-key")
    await secret.wait_for(timeout=30_000)
    first_secret = await secret.locator("code").inner_text()
    assert first_secret.startswith("condt_")
    await keys.get_by_text("in 30 days").wait_for()
    await no_errors(page)

    # edit and save (browser-key sorts first by name)
    await keys.get_by_role("button", name="Edit").first.click()
    await keys.get_by_role("heading", name="Edit browser-key").wait_for()
    await text_input(page, "Requests per minute").fill("900")
    await keys.get_by_role("button", name="Save changes").click()
    await keys.get_by_text("Saved browser-key.").wait_for(timeout=30_000)
    await keys.get_by_text("900 req/min").wait_for()
    await keys.get_by_role("button", name="Create key").wait_for()  # out of edit mode
    await no_errors(page)

    # disable, rotate, refresh
    await keys.get_by_role("button", name="Disable").first.click()
    await keys.locator(".cd-badge", has_text="Disabled").wait_for(timeout=30_000)
    await keys.get_by_role("button", name="Rotate").first.click()
    await keys.locator(".cd-secret", has_text="New key for browser-key").wait_for()
    await page.wait_for_function(
        "old => ![...document.querySelectorAll('.cd-secret code')].some(c => c.textContent === old)",
        arg=first_secret,
        timeout=30_000,
    )
    await keys.get_by_role("button", name="Refresh").click()
    where = page.get_by_text(re.compile("^handled on "))
    await where.wait_for(timeout=30_000)
    handled_on = await where.inner_text()
    if routing == "subshell":
        assert handled_on.startswith("handled on subshell-"), handled_on  # the click's thread
    else:
        assert handled_on.startswith("handled on "), handled_on  # wherever ipykernel sent it
    await no_errors(page)

    # the dashboard's controls
    usage = page.locator(".conduit").nth(1)
    await usage.get_by_text("Spend (USD) per day").wait_for()
    await dropdown(page, "Range").select_option(label="Last 30 days")
    await usage.get_by_text(re.compile("^Last 30 days")).wait_for(timeout=30_000)
    await dropdown(page, "Show").select_option(label="Tokens")
    await usage.get_by_text("Tokens per day").wait_for(timeout=30_000)
    await dropdown(page, "Stack by").select_option(label="key")
    await usage.locator(".cd-legend", has_text="traffic").wait_for(timeout=30_000)
    await dropdown(page, "Show").select_option(label="Spend (USD)")
    await usage.get_by_role("button", name="Refresh").click()
    await usage.get_by_text("Spend (USD) per day").wait_for(timeout=30_000)
    assert "6 requests" in await usage.inner_text()
    await no_errors(page)

    # the playground
    play = page.locator(".conduit").nth(2)
    await play.get_by_role("button", name="Use a temporary key").click()
    await play.get_by_text(re.compile("Temporary key: expires")).wait_for(timeout=30_000)
    await dropdown(page, "Model").select_option(label="gpt-4o-mini")
    await play.locator("textarea").fill("Hello from the browser")
    await play.get_by_role("button", name="Send").click()
    await play.get_by_text(re.compile("^Mock reply: Hello from the browser")).wait_for(
        timeout=30_000
    )
    await play.get_by_text(re.compile("ms total")).wait_for(timeout=30_000)
    await no_errors(page)

    if routing != "subshell":
        return  # one set of screenshots is enough
    await shoot(page, "light")
    await page.locator(".lm-MenuBar-itemLabel", has_text="Settings").click()
    await page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Theme$")).hover()
    await page.locator(".lm-Menu-itemLabel", has_text=re.compile("^JupyterLab Dark$")).click()
    await page.locator('body[data-jp-theme-light="false"]').wait_for(state="attached")
    await page.wait_for_timeout(500)  # the theme's stylesheet applies
    await shoot(page, "dark")
