"""The web UI end to end in headless Chromium (Debian's package, driven by Playwright)
against a gateway on loopback with MongoDB: sign in, create a key and read its secret, use
it with the openai SDK, find the request in the logs and the usage, disable the key (the
SDK gets 401), rotate it, delete it, sign out. Then every page in both themes at a desktop
and a phone width: an axe-core run with no serious violation, and a screenshot of each
under tests/screenshots/ (kept out of git)."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    BrowserContext,
    Error,
    Page,
    async_playwright,
    expect,
)

from conduit_tornado import Gateway
from conduit_tornado.store import MongoStore
from tests.axe_core import axe_script
from tests.conftest import MASTER_KEY, GatewayFactory
from tests.npm_pinned import ProvisionError
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.asyncio
SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"
PAGES = ["keys", "logs", "usage", "playground", "groups", "providers", "models", "alerts", "health"]
MODEL = "gpt-4o-mini"


@pytest_asyncio.fixture
async def ui_gateway(start_gateway: GatewayFactory, mongo_uri: str) -> Gateway:
    """A gateway on MongoDB with a mock provider behind one priced model."""
    gw = await start_gateway(store=MongoStore(mongo_uri, "t_ui_" + uuid.uuid4().hex[:12]))
    async with httpx2.AsyncClient(
        base_url=gw.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}
    ) as admin:
        for path, body in [
            ("/admin/v1/providers", {"name": "mock", "type": "mock"}),
            (
                "/admin/v1/models",
                {
                    "name": MODEL,
                    "deployments": [{"provider": "mock", "model": "mock-1"}],
                    "pricing": {"input_per_mtok": 150, "output_per_mtok": 600},
                },
            ),
        ]:
            assert (await admin.post(path, json=body)).status_code == 201
    return gw


@pytest.fixture
def chromium() -> str:
    assert Path(CHROMIUM).exists(), "the browser tests need Debian's chromium (scripts/test)"
    return CHROMIUM


@pytest.fixture
def axe() -> str:
    """axe-core's source, or the test is skipped saying why (scripts/test fetches it)."""
    try:
        return axe_script(fetch=False).read_text()
    except ProvisionError as exc:
        pytest.skip(f"accessibility not checked: {exc}")


@pytest_asyncio.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


async def sign_in(page: Page, url: str) -> None:
    await page.goto(url)
    await page.get_by_label("Master key").fill(MASTER_KEY)
    await page.get_by_role("button", name="Sign in").click()
    await page.locator("[data-page][data-ready]").wait_for()


async def show(page: Page, url: str, name: str) -> None:
    await page.goto(f"{url}#/{name}")
    await page.locator(f"[data-page='{name}'][data-ready]").wait_for()


async def _key(gw: Gateway, name: str) -> dict[str, Any]:
    async with httpx2.AsyncClient(
        base_url=gw.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}
    ) as admin:
        found: dict[str, Any] = (await admin.get("/admin/v1/keys", params={"name": name})).json()
    return dict(found["data"][0])


async def chat(base_url: str, key: str) -> str:
    async with openai.AsyncOpenAI(base_url=base_url + "/v1", api_key=key, max_retries=0) as sdk:
        answer = await sdk.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hello from the SDK"}]
        )
    return answer.choices[0].message.content or ""


@pytest.mark.timeout(120)
async def test_key_lifecycle_in_the_browser(
    ui_gateway: Gateway, browser: Browser, screenshots: Path
) -> None:
    url = ui_gateway.url + "/ui/"
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    page.set_default_timeout(15_000)
    blocked: list[str] = []  # anything our own Content-Security-Policy stops
    page.on(
        "console",
        lambda m: blocked.append(m.text) if "Content Security Policy" in m.text else None,
    )

    # A wrong key is refused, with the reason under the field.
    await page.goto(url)
    await page.get_by_label("Master key").fill("condt_not_the_master_key")
    await page.keyboard.press("Enter")  # the form works from the keyboard
    await expect(page.locator(".field .error:not([hidden])")).to_contain_text("not the master key")
    await page.get_by_label("Master key").fill(MASTER_KEY)
    await page.get_by_role("button", name="Sign in").click()
    await page.locator("[data-page='keys'][data-ready]").wait_for()
    await expect(page.get_by_text("No keys yet")).to_be_visible()

    # Create a key with a budget and a limit; its secret is shown once.
    await page.get_by_role("button", name="Create key").first.click()
    dialog = page.locator("dialog[open]")
    await expect(dialog.get_by_label("Name")).to_be_focused()
    await page.keyboard.press("Escape")  # a dialog closes with Escape
    await expect(dialog).to_have_count(0)
    # The theme toggle overrides the system's preference, and is remembered.
    await page.get_by_role("button", name="Dark theme").click()
    await expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    await page.reload()
    await expect(page.get_by_role("button", name="Light theme")).to_be_visible()
    await page.get_by_role("button", name="Light theme").click()
    await expect(page.locator("html")).to_have_attribute("data-theme", "light")
    await page.get_by_role("button", name="Create key").first.click()
    await dialog.get_by_label("Name").fill("e2e-app")
    await dialog.get_by_label("Budget (USD)").fill("5")
    expiry = (date.today() + timedelta(days=10)).isoformat()
    await dialog.get_by_label("Expires on").fill(expiry)
    await dialog.get_by_label("Requests per minute").fill("2.5")
    await dialog.get_by_role("button", name="Create key").click()
    rpm = dialog.get_by_label("Requests per minute")
    await expect(dialog.locator(".field:has(input[name='rpm']) .error")).to_have_text(
        "Requests per minute must be a whole number."
    )
    await expect(rpm).to_have_attribute("aria-invalid", "true")
    await dialog.get_by_label("Requests per minute").fill("100")
    # The gateway's own checks: the message stands under the field it names.
    await dialog.get_by_label("Allowed addresses").fill("notanip")
    await dialog.get_by_role("button", name="Create key").click()
    ips_error = dialog.locator(".field:has(input[name='allowed_ips']) .error")
    await expect(ips_error).to_contain_text("notanip")
    assert not re.match(r"Invalid value|Value error", await ips_error.inner_text())
    await expect(dialog.get_by_label("Allowed addresses")).to_be_focused()
    await page.screenshot(path=str(screenshots / "dialog-key-errors-light-1280.png"))
    await dialog.get_by_label("Allowed addresses").fill("")
    await page.screenshot(path=str(screenshots / "dialog-create-key-light-1280.png"))
    await dialog.get_by_role("button", name="Create key").click()
    secret = await page.locator("dialog[open] code[data-secret]").inner_text()
    await page.screenshot(path=str(screenshots / "dialog-secret-light-1280.png"))
    assert secret.startswith("condt_")
    await page.locator("dialog[open]").get_by_role("button", name="Done").click()
    row = page.locator("tbody tr", has_text="e2e-app")
    await expect(row).to_contain_text("100 req/min")
    await expect(row).to_contain_text("$5.00")
    # The expiry is a day in UTC, the UI's one time zone, shown under the status.
    await expect(row).to_contain_text(f"Expires {(date.today() + timedelta(days=10)):%b} ")
    await page.get_by_label("Expiring within 30 days").check()
    await expect(row).to_be_visible()
    await page.get_by_label("Expiring within 30 days").uncheck()
    # Saving the form unchanged changes nothing (the expiry is not shifted by a zone).
    before = await _key(ui_gateway, "e2e-app")
    assert before["expires_at"].startswith(f"{expiry}T23:59:59")  # the end of that day, UTC
    await page.get_by_role("button", name="Edit e2e-app").click()
    await page.locator("dialog[open]").get_by_role("button", name="Save changes").click()
    await expect(page.locator("dialog[open]")).to_have_count(0)
    assert await _key(ui_gateway, "e2e-app") == before

    # The key works with the openai SDK; the request shows in the logs and the usage.
    assert "hello from the SDK" in await chat(ui_gateway.url, secret)

    # The Playground streams an answer with the same key and shows the gateway's headers.
    await show(page, url, "playground")
    await page.get_by_label("Virtual key").fill(secret)
    await page.get_by_label("Message").fill("hello from the playground")
    await page.get_by_role("button", name="Send").click()
    await expect(page.locator(".msg.assistant")).to_contain_text("hello from the playground")
    headers = page.locator("dl.details")
    await expect(headers).to_contain_text("mock-1")
    await expect(headers).to_contain_text("Cost (from the request log)")
    await expect(page.get_by_role("button", name="Send")).to_be_enabled()
    # The same conversation through the Responses API, which the gateway translates.
    await page.get_by_label("API", exact=True).select_option("Responses")
    await page.get_by_label("Message").fill("hello from the responses api")
    await page.get_by_role("button", name="Send").click()
    answers = page.locator(".msg.assistant")
    await expect(answers.last).to_contain_text("hello from the responses api")
    await expect(page.locator(".msg.error")).to_have_count(0)
    await expect(page.get_by_role("button", name="Send")).to_be_enabled()
    await page.screenshot(path=str(screenshots / "playground-chat-light-1280.png"))

    await show(page, url, "logs")
    await expect(page.locator("tbody tr").first).to_contain_text("e2e-app")
    # Times with seconds, in UTC, said once in the column header and in full in the detail.
    await expect(page.locator("th").first).to_have_text("Time (UTC)")
    await expect(page.locator("tbody tr").first.locator("td").first).to_have_text(
        re.compile(r"^[A-Z][a-z]{2} \d{1,2}, \d{2}:\d{2}:\d{2}$")
    )
    opener = page.locator("tbody tr").first.get_by_role("button")
    await opener.click()
    details = page.locator("dialog[open]")
    await expect(details).to_contain_text("Gateway overhead")
    await expect(details).to_contain_text("mock / mock-1")
    await expect(details.locator("dd").first).to_have_text(
        re.compile(r"^[A-Z][a-z]{2} \d{1,2}, \d{4}, \d{2}:\d{2}:\d{2} UTC$")
    )
    await page.screenshot(path=str(screenshots / "dialog-log-detail-light-1280.png"))
    assert secret not in await page.content()
    assert secret[6:] not in await page.content()
    await details.get_by_role("button", name="Close").click()
    await expect(opener).to_be_focused()  # focus goes back to what opened the dialog
    # A dialog does not outlive its page: Back, or any change of the address, closes it and
    # the page that follows takes clicks and has the focus.
    await opener.click()
    await expect(details).to_have_count(1)
    await page.go_back()
    await page.locator("[data-page='playground'][data-ready]").wait_for()
    await expect(page.locator("dialog")).to_have_count(0)
    await expect(page.locator("#main")).to_be_focused()
    await page.screenshot(path=str(screenshots / "dialog-closed-on-back-light-1280.png"))
    await page.go_forward()
    await page.locator("[data-page='logs'][data-ready]").wait_for()
    await page.locator("tbody tr").first.get_by_role("button").click()
    await page.evaluate("location.hash = '#/providers'")
    await page.locator("[data-page='providers'][data-ready]").wait_for()
    await expect(page.locator("dialog")).to_have_count(0)
    await page.get_by_role("link", name="Models").click()  # nothing covers the page
    await page.locator("[data-page='models'][data-ready]").wait_for()
    await show(page, url, "usage")
    requests_stat = page.locator(".stat:has(.label:text-is('Requests')) .value")
    await expect(requests_stat).to_have_text("3")  # the SDK's, the playground's chat and Responses
    await expect(page.locator("tbody tr", has_text=MODEL)).to_be_visible()
    await expect(page.locator(".chart svg")).to_be_visible()
    await page.get_by_label("Break down by").select_option("key")
    await expect(page.locator("tbody tr", has_text="e2e-app")).to_contain_text("2")
    await expect(page.locator(".legend")).to_contain_text("e2e-app")
    async with page.expect_download() as download_info:
        await page.get_by_role("button", name="Export CSV").click()
    csv_path = await (await download_info.value).path()
    lines = csv_path.read_text().splitlines()
    assert lines[0].startswith("day,key_id,key_name,group,model,user,requests")
    assert any(",e2e-app,," + MODEL in line for line in lines[1:]), lines

    # Disabled: the SDK gets 401.
    await show(page, url, "keys")
    await page.get_by_role("button", name="Disable e2e-app").click()
    await expect(page.locator("tbody tr", has_text="e2e-app")).to_contain_text("Disabled")
    with pytest.raises(openai.AuthenticationError):
        await chat(ui_gateway.url, secret)
    await page.get_by_role("button", name="Enable e2e-app").click()
    await expect(page.locator("tbody tr", has_text="e2e-app")).to_contain_text("Active")

    # Rotated: a new secret works, the old one no longer does.
    await page.get_by_role("button", name="Rotate e2e-app").click()
    await page.locator("dialog[open]").get_by_role("button", name="Rotate key").click()
    rotated = await page.locator("dialog[open] code[data-secret]").inner_text()
    await page.locator("dialog[open]").get_by_role("button", name="Done").click()
    assert rotated.startswith("condt_") and rotated != secret
    assert "hello from the SDK" in await chat(ui_gateway.url, rotated)
    with pytest.raises(openai.AuthenticationError):
        await chat(ui_gateway.url, secret)

    # The key's own page charts its usage.
    await page.get_by_role("link", name="e2e-app").click()
    await page.locator("[data-page='keys'][data-ready] .chart svg").wait_for()

    # Deleted, after a confirmation.
    await show(page, url, "keys")
    await page.get_by_role("button", name="Delete e2e-app").click()
    await page.locator("dialog[open]").get_by_role("button", name="Delete key").click()
    await expect(page.get_by_text("No keys yet")).to_be_visible()
    with pytest.raises(openai.AuthenticationError):
        await chat(ui_gateway.url, rotated)

    # Signed out: the cookie no longer opens the admin API.
    cookies = {c["name"]: c["value"] for c in await context.cookies()}
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    async with httpx2.AsyncClient(base_url=ui_gateway.url) as client:
        cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
        gone = await client.get("/admin/v1/keys", headers={"Cookie": cookie})
    assert gone.status_code == 401
    assert blocked == []
    await context.close()


LONG = "zoe-notebook-with-a-rather-long-descriptive-name-for-the-team"
LONG_GROUP = "research-and-development-platform"
EXTRA_MODELS = ["other", *(f"model-{i}" for i in range(1, 8))]


async def _seed(gw: Gateway) -> None:
    """Enough data that every page has something to show, and what made the trial's tables
    too wide: a long key name, a long group name, model lists and limits."""
    async with httpx2.AsyncClient(
        base_url=gw.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}
    ) as admin:
        for name in ("research", LONG_GROUP):
            await admin.post(
                "/admin/v1/groups",
                json={"name": name, "max_budget": 0.05, "budget_duration": "monthly", "rpm": 600},
            )
        made = await admin.post(
            "/admin/v1/keys",
            json={
                "name": "alice-notebook",
                "group": "research",
                "max_budget": 50,
                "budget_duration": "monthly",
                "rpm": 600,
                "tpm": 200_000,
                "allowed_models": [MODEL],
            },
        )
        for i in range(3):
            await admin.post("/admin/v1/keys", json={"name": f"service-{i}", "enabled": i != 1})
        # Models first (a key may list only models that exist). More models than the usage
        # chart has colours: the rest share one series, and one model is named "other".
        for name in EXTRA_MODELS:
            await admin.post(
                "/admin/v1/models",
                json={"name": name, "deployments": [{"provider": "mock", "model": name}]},
            )
        wide = await admin.post(
            "/admin/v1/keys",
            json={
                "name": LONG,
                "group": LONG_GROUP,
                "max_budget": 5,
                "budget_duration": "30d",
                "rpm": 60,
                "tpm": 100_000,
                "max_parallel": 4,
                "allowed_models": [MODEL, *EXTRA_MODELS],
                "expires_at": (date.today() + timedelta(days=20)).isoformat() + "T23:59:59Z",
            },
        )
        assert wide.status_code == 201, wide.text
        for key, model, user in [
            *((made.json()["key"], MODEL, f"user-{i % 2}") for i in range(6)),
            *((wide.json()["key"], name, None) for name in EXTRA_MODELS),
            (wide.json()["key"], "no-such-model", None),  # refused: no tokens, no cost
        ]:
            await admin.post(
                "/v1/chat/completions",
                headers={"Authorization": f"Bearer {key}"},
                json={
                    "model": model,
                    "messages": [{"role": "user", "content": "hi " * 40}],
                    **({"user": user} if user else {}),
                },
            )


def errors_into(errors: list[str]) -> Callable[[Error], None]:
    return lambda exc: errors.append(str(exc))


async def _check_sorting(page: Page, url: str) -> None:
    """The keys table sorts by a column header: newest first by default, then by spend."""
    await show(page, url, "keys")
    names = page.locator("tbody tr td:first-child a")
    await expect(names.first).to_have_text(LONG)
    await page.get_by_role("button", name="Spend / budget").click()
    await expect(names.first).to_have_text("alice-notebook")
    header = page.locator("th", has=page.get_by_role("button", name="Spend / budget"))
    await expect(header).to_have_attribute("aria-sort", "descending")
    await page.get_by_role("button", name="Name", exact=True).click()
    await expect(names).to_have_text(
        ["alice-notebook", "service-0", "service-1", "service-2", LONG]
    )


async def _axe(page: Page, script: str) -> list[dict[str, Any]]:
    await page.add_script_tag(content=script)
    result = await page.evaluate(
        "async () => { const r = await axe.run(document);"
        " return {passes: r.passes.length, violations: r.violations}; }"
    )
    assert result["passes"] > 20, result  # axe ran its rules on a rendered page
    return [v for v in result["violations"] if v["impact"] in ("serious", "critical")]


@pytest.fixture
def screenshots() -> Path:
    SCREENSHOTS.mkdir(exist_ok=True)
    return SCREENSHOTS


# Whether a page fits its window: nothing wider than the window, no table wider than its
# box (at 1024 px and up every column shows), and every row's actions on screen.
_LAYOUT = """() => {
  const out = [];
  const page = document.documentElement.scrollWidth;
  if (page > innerWidth + 1) out.push(`page ${page} px wide in a ${innerWidth} px window`);
  for (const wrap of document.querySelectorAll(".table-wrap")) {
    if (wrap.scrollWidth > wrap.clientWidth + 1 && innerWidth >= 1024) {
      const cut = [...wrap.querySelectorAll("th")].filter((th) =>
        th.getBoundingClientRect().right > wrap.getBoundingClientRect().right + 1);
      out.push([...wrap.querySelectorAll("th")].map((th) => `${th.textContent}=${Math.round(th.getBoundingClientRect().width)}`).join(" "));
      out.push(`table ${wrap.scrollWidth} px in ${wrap.clientWidth} px: `
        + cut.map((th) => th.textContent).join(", ") + " off-screen");
    }
  }
  for (const cell of document.querySelectorAll("td.col-actions button")) {
    const box = cell.getBoundingClientRect();
    if (box.right > innerWidth + 1 || box.left < 0) out.push(`${cell.textContent} off-screen`);
  }
  return out;
}"""


def failures_into(failed: list[str]) -> Callable[[Any], None]:
    """Collects what a page load should never show: console errors (a failed request is
    one), responses of 400 and up, and requests that never got an answer."""

    def record(event: Any) -> None:
        kind = type(event).__name__
        if kind == "ConsoleMessage" and event.type == "error":
            failed.append(f"console: {event.text}")
        elif kind == "Response" and event.status >= 400:
            failed.append(f"{event.status} {event.url}")
        elif kind == "Request":
            failed.append(f"failed {event.url}: {event.failure}")

    return record


@pytest.mark.timeout(300)
async def test_every_page_accessible_and_pictured(
    ui_gateway: Gateway, browser: Browser, axe: str, screenshots: Path
) -> None:
    await _seed(ui_gateway)
    url = ui_gateway.url + "/ui/"
    problems: dict[str, Any] = {}
    layout: dict[str, list[str]] = {}
    taken: list[str] = []
    for scheme in ("light", "dark"):
        for width in (1280, 1024, 390):
            context: BrowserContext = await browser.new_context(
                viewport={"width": width, "height": 800},
                color_scheme=scheme,
                bypass_csp=True,  # to inject axe; the key test runs under the real policy
            )
            page = await context.new_page()
            page.set_default_timeout(15_000)
            errors: list[str] = []
            failed: list[str] = []
            asked: list[str] = []
            page.on("pageerror", errors_into(errors))
            for event in ("console", "response", "requestfailed"):
                page.on(event, failures_into(failed))
            page.on("request", lambda r, asked=asked: asked.append(r.url))
            await sign_in(page, url)
            if (scheme, width) == ("light", 1280):
                await _check_sorting(page, url)
                await _check_nits(page, url)
            for name in [*PAGES, "key-detail"]:
                if name == "key-detail":  # one key's own page, with its usage chart
                    await show(page, url, "keys")
                    await page.get_by_role("link", name="alice-notebook").click()
                    await page.locator("[data-page='keys'][data-ready] .chart").wait_for()
                else:
                    await show(page, url, name)
                shot = f"{name}-{scheme}-{width}"
                await page.screenshot(path=str(screenshots / f"{shot}.png"), full_page=True)
                taken.append(shot)
                found_layout = await page.evaluate(_LAYOUT)
                if found_layout:
                    layout[shot] = found_layout
                if width == 1280:
                    found = await _axe(page, axe)
                    if found:
                        problems[f"{name} ({scheme})"] = [
                            (v["id"], v["help"], [n["target"] for n in v["nodes"][:3]])
                            for v in found
                        ]
            await page.get_by_role("button", name="Sign out").click()
            await page.get_by_role("button", name="Sign in").wait_for()
            await page.screenshot(path=str(screenshots / f"login-{scheme}-{width}.png"))
            taken.append(f"login-{scheme}-{width}")
            # A fresh load of the sign-in page, signed out, is as quiet.
            await page.reload()
            await page.get_by_role("button", name="Sign in").wait_for()
            assert errors == [], errors
            assert failed == [], failed
            # A plain gateway is no JupyterHub service: the page never asks a hub.
            assert not [u for u in asked if "/hub/" in u], asked
            await context.close()
    assert problems == {}, json.dumps(problems, indent=1)
    assert layout == {}, json.dumps(layout, indent=1)
    for shot in taken:  # each written, and not a blank page
        assert (screenshots / f"{shot}.png").stat().st_size > 8_000, shot
    assert len(taken) == 2 * 3 * (len(PAGES) + 2)


async def _check_nits(page: Page, url: str) -> None:
    """A refused request used no tokens and cost nothing ("—", not "0" and "$0.00"); the
    mock provider's base URL says it has none; the usage legend's bucket of the smaller
    series cannot be mistaken for a model named "other"; long names are cut, whole in a
    tooltip."""
    await show(page, url, "logs")
    refused = page.locator("tbody tr", has_text="no-such-model")
    await expect(refused.locator("td[data-label='Tokens']")).to_have_text("—")
    await expect(refused.locator("td[data-label='Cost']")).to_have_text("—")
    # alice-notebook's group budget refuses its last requests: a served one (status 200).
    served = (
        page.locator("tbody tr", has_text="alice-notebook")
        .filter(has=page.locator("td[data-label='Status']", has_text="200"))
        .first
    )
    await expect(served.locator("td[data-label='Cost']")).to_have_text(re.compile(r"^\$0\.0\d+"))
    await show(page, url, "providers")
    await expect(page.locator("tbody tr", has_text="mock")).to_contain_text("Built in")
    await show(page, url, "usage")
    legend = page.locator(".legend > span")
    await expect(legend).to_have_text(["gpt-4o-mini"])  # the models that cost nothing: no bars
    await page.get_by_label("Show").select_option("Requests")
    await expect(legend.last).to_have_text(re.compile(r"^All others \(\d+\)$"))
    assert "Other" not in await legend.all_inner_texts()
    await show(page, url, "keys")
    name = page.locator("tbody tr td:first-child a", has_text=LONG)
    await expect(name).to_have_attribute("title", LONG)
    assert await name.evaluate("a => a.scrollWidth > a.clientWidth")  # cut with an ellipsis


@pytest.mark.timeout(120)
async def test_providers_models_and_groups_in_the_browser(
    ui_gateway: Gateway, browser: Browser, screenshots: Path
) -> None:
    url = ui_gateway.url + "/ui/"
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    page.set_default_timeout(15_000)
    await sign_in(page, url)

    # A provider with a write-only key, and its connection test.
    await show(page, url, "providers")
    await page.get_by_role("button", name="Add provider").click()
    dialog = page.locator("dialog[open]")
    await dialog.get_by_label("Name").fill("backup")
    # The base URL's hint follows the type: whether it ends in /v1 differs between them.
    base_url = dialog.get_by_label("Base URL")
    base_help = dialog.locator(".field:has(input[name='base_url']) .help")
    await expect(base_help).to_contain_text("Ends in /v1")
    await dialog.get_by_label("Type").select_option("anthropic")
    await expect(base_help).to_contain_text("Without /v1")
    # The API's errors stand under the field they concern, in the form's words.
    await dialog.get_by_label("Type").select_option("azure")
    await dialog.get_by_role("button", name="Add provider").click()
    base_error = dialog.locator(".field:has(input[name='base_url']) .error")
    await expect(base_error).to_have_text("Base URL is required for azure providers")
    await expect(base_url).to_be_focused()
    await base_url.fill("not a url")
    await dialog.get_by_role("button", name="Add provider").click()
    await expect(base_error).to_contain_text("URL")
    assert not re.match(r"Invalid value|Value error", await base_error.inner_text())
    await page.screenshot(path=str(screenshots / "dialog-provider-errors-light-1280.png"))
    await expect(dialog.locator(".form-error")).to_be_hidden()  # not above the buttons too
    await base_url.fill("")
    await dialog.get_by_label("Type").select_option("mock")
    await dialog.get_by_label("API key").fill("sk-very-secret-value")
    await dialog.get_by_role("button", name="Add provider").click()
    row = page.locator("tbody tr", has_text="backup")
    await expect(row).to_contain_text("Key set")
    await page.get_by_role("button", name="Test provider backup").click()
    await page.locator("dialog[open]").get_by_label("Provider's model").fill("mock-2")
    await page.locator("dialog[open]").get_by_role("button", name="Run test").click()
    await expect(page.locator("dialog[open] .provider-test")).to_contain_text("Connected")
    await page.locator("dialog[open]").get_by_role("button", name="Close").click()
    assert "sk-very-secret-value" not in await page.content()

    # An openai-type provider whose base URL lacks /v1 gets 404s: the test says where to look.
    await page.get_by_role("button", name="Add provider").click()
    dialog = page.locator("dialog[open]")
    await dialog.get_by_label("Name").fill("no-v1")
    await dialog.get_by_label("Base URL").fill(ui_gateway.url)  # this gateway, without /v1
    await dialog.get_by_role("button", name="Add provider").click()
    await expect(page.locator("tbody tr", has_text="no-v1")).to_contain_text(ui_gateway.url)
    await page.get_by_role("button", name="Test provider no-v1").click()
    await page.locator("dialog[open]").get_by_label("Provider's model").fill("gpt-4o-mini")
    await page.locator("dialog[open]").get_by_role("button", name="Run test").click()
    outcome = page.locator("dialog[open] .provider-test")
    await expect(outcome).to_contain_text("Failed")
    await expect(outcome).to_contain_text("wrong base URL")
    await expect(outcome).to_contain_text("Ends in /v1")
    await page.screenshot(path=str(screenshots / "dialog-provider-test-404-light-1280.png"))
    await page.locator("dialog[open]").get_by_role("button", name="Close").click()

    # A model on it: a wrong pricing JSON is named under its field, then fixed.
    await show(page, url, "models")
    await page.get_by_role("button", name="Map a model").click()
    dialog = page.locator("dialog[open]")
    await dialog.get_by_label("Model name").fill("chat-b")
    await dialog.get_by_label("Provider", exact=True).select_option("backup")
    await dialog.get_by_label("Provider's model").fill("mock-2")
    pricing = dialog.get_by_label("Pricing (JSON, USD per million tokens)")
    await pricing.fill("{input_per_mtok: 1}")
    await dialog.get_by_role("button", name="Create model").click()
    await expect(dialog.locator(".field:has(textarea[name='pricing']) .error")).to_contain_text(
        "not valid JSON"
    )
    await pricing.fill('{"input_per_mtok": 1, "output_per_mtok": 2}')
    await dialog.get_by_role("button", name="Create model").click()
    row = page.locator("tbody tr", has_text="chat-b")
    await expect(row).to_contain_text("backup/mock-2")
    await expect(row).to_contain_text("$1.00 in / $2.00 out per 1M tokens")

    # Signed out and in again in another tab: this tab's next change still goes through
    # (it fetches the new session's CSRF token once).
    other = await context.new_page()
    await other.goto(url)
    await other.get_by_role("button", name="Sign out").click()
    await sign_in(other, url)
    await other.close()

    # A group: created, edited, deleted.
    await show(page, url, "groups")
    await expect(page.get_by_text("No groups yet")).to_be_visible()
    await page.get_by_role("button", name="Create group").click()
    dialog = page.locator("dialog[open]")
    await dialog.get_by_label("Name").fill("team-a")
    await dialog.get_by_label("Budget (USD)").fill("10")
    await dialog.get_by_label("Budget resets").select_option("monthly")
    await dialog.get_by_role("button", name="Create group").click()
    await expect(page.locator("tbody tr", has_text="team-a")).to_contain_text("$0.00 / $10.00")
    await page.get_by_role("button", name="Edit group team-a").click()
    await page.locator("dialog[open]").get_by_label("Requests per minute").fill("60")
    await page.locator("dialog[open]").get_by_role("button", name="Save changes").click()
    await expect(page.locator("tbody tr", has_text="team-a")).to_contain_text("60 req/min")
    await page.get_by_role("button", name="Delete group team-a").click()
    await page.locator("dialog[open]").get_by_role("button", name="Delete group").click()
    await expect(page.get_by_text("No groups yet")).to_be_visible()
    await context.close()

    async with httpx2.AsyncClient(
        base_url=ui_gateway.url, headers={"Authorization": f"Bearer {MASTER_KEY}"}
    ) as admin:
        stored = (await admin.get("/admin/v1/providers/backup")).text
        models = (await admin.get("/admin/v1/models/chat-b")).json()
    assert "sk-very-secret-value" not in stored and '"has_api_key":true' in stored
    assert models["deployments"][0]["provider"] == "backup"
