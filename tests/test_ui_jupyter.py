"""The web UI inside JupyterLab at {base_url}conduit/ui/, from the same handlers: sign in
with the master key (Jupyter's own XSRF check applies on top of ours), create a key and
read its secret; and a logged-in Jupyter user is admitted without the master key."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import async_playwright, expect

from conduit_tornado.store import MongoStore
from tests.conftest import MASTER_KEY, free_port
from tests.lab import jupyterlab
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, Lab

pytestmark = pytest.mark.asyncio
BASE = "/jupyter/"
REPO = Path(__file__).resolve().parent.parent  # a base_url other than "/", as on JupyterHub


@pytest.fixture
def ui_lab(tmp_path: Path, mongo_uri: str) -> Iterator[Lab]:
    assert Path(CHROMIUM).exists(), "the browser tests need Debian's chromium (scripts/test)"
    it = Lab(free_port(), "ui-test-token", "t_ui_lab_" + os.urandom(4).hex())
    env = {
        "CONDUIT_MONGODB_URI": mongo_uri,
        "CONDUIT_MONGODB_DATABASE": it.database,
        "CONDUIT_MASTER_KEY": MASTER_KEY,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "HOME": str(tmp_path),
        # This checkout's package and extension, whatever the editable install points at.
        "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "jupyter_ext")]),
    }
    health = f"{BASE}conduit/health/ready"
    with jupyterlab(it.port, it.token, tmp_path, env, f"--ServerApp.base_url={BASE}", ready=health):
        yield it


@pytest.mark.timeout(180)
async def test_sign_in_and_create_a_key_inside_jupyterlab(ui_lab: Lab, mongo_uri: str) -> None:
    root = f"http://127.0.0.1:{ui_lab.port}{BASE}"
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        # A browser with no Jupyter login: the UI asks for the master key.
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = await context.new_page()
        page.set_default_timeout(20_000)
        await page.goto(root + "conduit/ui/")
        await page.get_by_label("Master key").fill(MASTER_KEY)
        await page.get_by_role("button", name="Sign in").click()
        await page.locator("[data-page='keys'][data-ready]").wait_for()
        await page.get_by_role("button", name="Create key").first.click()
        await page.locator("dialog[open]").get_by_label("Name").fill("lab-key")
        await page.locator("dialog[open]").get_by_role("button", name="Create key").click()
        secret = await page.locator("dialog[open] code[data-secret]").inner_text()
        await page.locator("dialog[open]").get_by_role("button", name="Done").click()
        await expect(page.locator("tbody tr", has_text="lab-key")).to_be_visible()
        cookies = await context.cookies()
        await context.close()

        # A logged-in Jupyter user is admitted as is (the extension's allow_jupyter_admin).
        context = await browser.new_context(viewport={"width": 1280, "height": 800})
        page = await context.new_page()
        page.set_default_timeout(20_000)
        await page.goto(f"{root}lab?token={ui_lab.token}")
        await page.goto(root + "conduit/ui/#/keys")
        await expect(page.locator("tbody tr", has_text="lab-key")).to_be_visible()
        await context.close()
        await browser.close()

    session = next(c for c in cookies if c["name"] == "conduit_ui_session")
    assert session["path"] == f"{BASE}conduit/"
    assert session["httpOnly"] and session["sameSite"] == "Strict"
    assert secret.startswith("condt_")
    store = MongoStore(mongo_uri, ui_lab.database)
    try:
        created = await store.find_one("keys", {"name": "lab-key"})
        assert created is not None and created["prefix"] == secret[:12]
        assert await store.count("ui_sessions", {}) == 1
    finally:
        await store.close()
