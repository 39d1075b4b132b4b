"""One real-browser test: JupyterLab on loopback, the key-management notebook opened in
headless Chromium (Debian's package, driven by Playwright), its KeyManager widget used by
clicks, and the new key checked in the store."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import async_playwright

from conduit_tornado.store import MongoStore
from tests.conftest import free_port
from tests.lab import jupyterlab

pytestmark = pytest.mark.asyncio
CHROMIUM = "/usr/bin/chromium"
NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "key_management.ipynb"
# What a sandboxed, offline machine needs: no background traffic, no GPU, no sandbox (root).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class Lab:
    port: int
    token: str
    database: str


@pytest.fixture
def lab(tmp_path: Path, mongo_uri: str) -> Iterator[Lab]:
    """JupyterLab on loopback; its kernels see the test MongoDB through CONDUIT_*."""
    assert Path(CHROMIUM).exists(), (
        "the browser test needs Debian's chromium (scripts/test installs it)"
    )
    root = tmp_path / "lab"
    root.mkdir()
    shutil.copy(NOTEBOOK, root / NOTEBOOK.name)
    it = Lab(free_port(), "browser-test-token", "t_browser_" + os.urandom(4).hex())
    env = {
        "CONDUIT_MONGODB_URI": mongo_uri,
        "CONDUIT_MONGODB_DATABASE": it.database,
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "HOME": str(tmp_path),
    }
    with jupyterlab(it.port, it.token, root, env):
        yield it


@pytest.mark.timeout(300)
async def test_key_manager_in_jupyterlab(lab: Lab, mongo_uri: str, tmp_path: Path) -> None:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page()
        await page.goto(f"http://127.0.0.1:{lab.port}/lab/tree/{NOTEBOOK.name}?token={lab.token}")
        await page.locator(".jp-Notebook").wait_for(timeout=60_000)
        # The kernel is connected once the status bar says so (the toolbar indicator reads
        # "idle" before any kernel exists, and key presses then run nothing).
        await page.locator(".jp-StatusBar-TextItem", has_text="| Idle").wait_for(timeout=60_000)
        cells = page.locator(".jp-Notebook .jp-Cell")
        await cells.first.click()  # select the first cell, then run each as a person would
        await page.keyboard.press("Escape")
        for _ in range(await cells.count()):
            await page.keyboard.press("Shift+Enter")

        create = page.get_by_role("button", name="Create key")
        try:
            await create.wait_for(timeout=60_000)  # the KeyManager widget rendered
        except Exception:
            await page.screenshot(path=str(tmp_path / "failed.png"))  # kept in pytest's tmp dir
            raise
        await page.get_by_text("from-code").first.wait_for(timeout=60_000)  # the last cell ran
        output = page.locator(
            ".jp-OutputArea-output", has_text=re.compile(r"store: (memory|mongodb)")
        ).first
        store_line = await output.text_content() or ""  # scrolled away: not laid out
        name_label = page.locator("label", has_text=re.compile("^Name$"))
        await (
            page.locator(".widget-text").filter(has=name_label).locator("input").fill("browser-key")
        )
        await create.click()
        secret_box = page.locator("div", has_text="New key for browser-key").last
        await secret_box.wait_for(timeout=30_000)
        shown = await secret_box.locator("code").inner_text()
        await page.screenshot(path=str(tmp_path / "key-manager.png"))
        await browser.close()

    assert shown.startswith("condt_")
    assert "store: mongodb" in store_line, store_line
    store = MongoStore(mongo_uri, lab.database)
    try:
        created = await store.find_one("keys", {"name": "browser-key"})
        assert created is not None and created["prefix"] == shown[:12]
        assert shown not in repr(created)  # the store holds a hash, not the key
    finally:
        await store.close()
