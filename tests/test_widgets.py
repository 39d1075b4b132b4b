"""The ipywidgets, driven by clicks and traits against a live gateway (no browser)."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

import httpx2
import pytest
import pytest_asyncio
from conduit_jupyter.widgets import KeyManager, Playground, UsageDashboard

from conduit_tornado import AdminClient, Gateway
from conduit_tornado.api.routes import routes
from tests.conftest import MASTER_KEY, GatewayFactory

pytestmark = [
    pytest.mark.asyncio,
    # The widgets share the gateway's loop, as in a notebook, and ipywidgets builds its models
    # synchronously there (about 120 for a KeyManager, 50 to 80 ms on an idle machine; more,
    # with garbage collections of the widgets it keeps, on a loaded one). Their code makes no
    # blocking call: every request is awaited on an async client.
    pytest.mark.blocks_loop(reason="ipywidgets builds its widget models on the shared loop"),
]


@pytest_asyncio.fixture
async def gw(start_gateway: GatewayFactory) -> Gateway:
    gateway = await start_gateway()
    async with AdminClient(gateway.url, MASTER_KEY) as admin:
        await admin.create_provider(name="mock", type="mock", options={"words": 6})
        await admin.create_model(name="demo", deployments=[{"provider": "mock", "model": "m"}])
        await admin.create_model(
            name="priced",
            deployments=[{"provider": "mock", "model": "m"}],
            pricing={"input_per_mtok": 1000, "output_per_mtok": 1000},
        )
    return gateway


async def test_key_manager_create_edit_toggle_rotate_delete(gw: Gateway) -> None:
    km = KeyManager(url=gw.url, master_key=MASTER_KEY)
    await km.refresh()
    assert km.data == [] and "No keys yet" in km.summary.value  # the empty state
    assert list(km.model_picker.options) == ["demo", "priced"]  # filled from the mappings

    km.name.value = "analyst"
    km.model_picker.value = ("demo",)
    km.models.value = "gpt-*"
    km.limits["rpm"].value = "30"
    km.max_budget.value = "5"
    km.budget_duration.value = "monthly"
    km.metadata.value = '{"team": "search"}'
    km.create_button.click()
    await km.settle()
    assert km.status.value == ""
    assert km.last_secret.startswith("condt_") and km.last_secret in km.secret.value  # shown once
    async with AdminClient(gw.url, MASTER_KEY) as admin:
        stored = (await admin.list_keys())["data"][0]
    assert stored["name"] == "analyst" and stored["allowed_models"] == ["demo", "gpt-*"]
    assert (
        stored["rpm"] == 30
        and stored["max_budget"] == 5
        and stored["metadata"] == {"team": "search"}
    )
    assert km.name.value == ""  # the form is cleared
    key_id = stored["id"]

    km.row_buttons(key_id)["Edit"].click()
    assert (
        km.name.value == "analyst"
        and km.limits["rpm"].value == "30"
        and not km.save_button.disabled
    )
    km.limits["rpm"].value = "60"
    km.save_button.click()
    await km.settle()
    km.row_buttons(key_id)["Disable"].click()
    await km.settle()
    assert km.secret.value == ""  # the secret is gone after the next action
    async with AdminClient(gw.url, MASTER_KEY) as admin:
        updated = await admin.get_key(key_id)
    assert updated["rpm"] == 60 and updated["enabled"] is False
    assert "Enable" in km.row_buttons(key_id)

    old = km.last_secret
    km.row_buttons(key_id)["Rotate"].click()
    await km.settle()
    assert km.last_secret != old and km.last_secret in km.secret.value

    km.row_buttons(key_id)["Delete"].click()
    await km.settle()
    assert "Confirm delete" in km.row_buttons(key_id)  # asks first
    km.row_buttons(key_id)["Confirm delete"].click()
    await km.settle()
    assert km.data == [] and "No keys yet" in km.summary.value
    async with AdminClient(gw.url, MASTER_KEY) as admin:
        assert (await admin.list_keys())["total"] == 0


async def test_key_manager_shows_errors_inline(gw: Gateway) -> None:
    km = KeyManager(url=gw.url, master_key=MASTER_KEY)
    km.create_button.click()  # no name
    await km.settle()
    assert "Name is required" in km.status.value and "Traceback" not in km.status.value
    km.name.value = "x"
    km.limits["tpm"].value = "lots"
    km.create_button.click()
    await km.settle()
    assert "Tokens per minute must be a positive whole number" in km.status.value
    km.limits["tpm"].value = ""
    km.ips.value = "not-an-ip"
    km.create_button.click()
    await km.settle()
    assert "not an IP address" in km.status.value
    km.ips.value = ""
    km.metadata.value = "team: search"
    km.create_button.click()
    await km.settle()
    assert "Metadata (JSON) must be a JSON object" in km.status.value
    assert "JSONDecodeError" not in km.status.value
    bad = KeyManager(url=gw.url, master_key="wrong")
    bad.refresh_button.click()
    await bad.settle()
    assert "master key" in bad.status.value


async def test_playground_streams_and_reports_cost(gw: Gateway) -> None:
    pg = Playground(url=gw.url, master_key=MASTER_KEY)
    await pg.refresh()
    assert set(pg.model.options) == {"demo", "priced"}
    pg.temp_key_button.click()
    await pg.settle()
    assert pg.key.value.startswith("condt_")
    pg.model.value = "priced"
    pg.prompt.value = "Tell me something"
    seen: list[str] = []
    pg.output.observe(lambda change: seen.append(change["new"]), names="value")
    pg.send_button.click()
    await pg.settle()
    assert pg.text == "Mock reply: Tell me something Mock"  # options.words=6 cycles the reply
    assert len(seen) >= 6  # the answer appeared chunk by chunk, not at once
    assert (
        "ms total" in pg.stats.value and "$" in pg.stats.value and "no price" not in pg.stats.value
    )
    pg.model.value = "demo"
    pg.key.value = "condt_not-a-key"
    pg.send_button.click()
    await pg.settle()
    assert "Invalid API key" in pg.status.value


async def test_usage_dashboard_charts_per_day(gw: Gateway) -> None:
    async with AdminClient(gw.url, MASTER_KEY) as admin:
        key = (await admin.create_key(name="k"))["key"]
    async with httpx2.AsyncClient(
        base_url=gw.url, headers={"Authorization": f"Bearer {key}"}
    ) as http:
        for model in ("demo", "priced", "priced"):
            r = await http.post(
                "/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
            )
            assert r.status_code == 200
    dash = UsageDashboard(url=gw.url, master_key=MASTER_KEY)
    await dash.refresh()
    today = datetime.now(UTC).date().isoformat()
    assert dash.days[-1] == today and len(dash.days) == 7
    assert list(dash.series) == ["priced", "demo"]  # largest spend first
    assert dash.series["priced"][-1] > 0 and dash.series["demo"][-1] == 0
    assert (
        "<svg" in dash.chart.value
        and "<rect" in dash.chart.value
        and "3 requests" in dash.summary.value
    )
    dash.metric.value = "Requests"  # changing a control redraws
    await dash.settle()
    assert dash.series["priced"][-1] == 2 and dash.series["demo"][-1] == 1
    dash.by.value = "key_id"
    await dash.settle()
    assert list(dash.series) == ["k"]
    dash.range.value = 30
    await dash.settle()
    assert len(dash.days) == 30


async def test_playground_temporary_key_is_bounded_and_reused(gw: Gateway) -> None:
    pg = Playground(url=gw.url, master_key=MASTER_KEY)
    await pg.settle()  # the model list fills itself
    assert set(pg.model.options) == {"demo", "priced"}
    pg.temp_key_button.click()
    await pg.settle()
    first = pg.key.value
    pg.temp_key_button.click()
    await pg.settle()
    assert pg.key.value == first  # reused, not one more key per click
    async with AdminClient(gw.url, MASTER_KEY) as admin:
        keys = (await admin.list_keys())["data"]
    assert len(keys) == 1
    assert keys[0]["max_budget"] == 1.0 and keys[0]["expires_at"] is not None
    assert "expires" in pg.key_note.value and "$1.00" in pg.key_note.value


async def test_playground_send_is_disabled_while_streaming(gw: Gateway) -> None:
    pg = Playground(url=gw.url, master_key=MASTER_KEY)
    await pg.temporary_key()
    await pg.settle()
    pg.model.value, pg.prompt.value = "demo", "slow words please"
    states: list[bool] = []
    pg.output.observe(lambda _: states.append(pg.send_button.disabled), names="value")
    pg.send_button.click()
    await pg.settle()
    assert states and all(states)  # every chunk arrived with Send disabled
    assert not pg.send_button.disabled and pg.send_button.description == "Send"


async def test_playground_responses_mode_follows_what_the_gateway_serves(gw: Gateway) -> None:
    pg = Playground(url=gw.url, master_key=MASTER_KEY)
    await pg.temporary_key()
    served = any(pattern.startswith("/v1/responses") for pattern, *_ in routes(""))
    await pg.settle()
    pg.mode.value = "Responses"
    await pg.settle()
    assert pg.responses_served is served
    if not served:  # this gateway predates the Responses API: the mode says so and stands down
        assert pg.mode.value == "Chat Completions" and "/v1/responses" in pg.mode_note.value
        return
    pg.model.value, pg.prompt.value = "demo", "respond"
    pg.send_button.click()
    await pg.settle()
    assert pg.text.startswith("Mock reply"), pg.status.value
    assert "completion tokens" in pg.stats.value


async def test_key_grid_is_one_aligned_grid_sorted_by_a_column(gw: Gateway) -> None:
    async with AdminClient(gw.url, MASTER_KEY) as admin:
        await admin.create_key(name="beta", rpm=600, tpm=200_000)
        await admin.create_key(name="alpha", max_budget=50, budget_duration="monthly")
        await admin.create_key(name="gamma", enabled=False)
    # Built off the gateway's loop: ipywidgets makes the form's ~120 models synchronously (the
    # kernel's one-time cost in a notebook); the loop is adopted at the first action.
    km = await asyncio.to_thread(KeyManager, url=gw.url, master_key=MASTER_KEY)
    await km.refresh()
    heads = [b.description for b in km.grid.children[:9]]
    assert heads[0] == "Name ▲" and heads[-1] == "Actions"
    tracks = re.findall(r"minmax\([^)]*\)|\S+", km.grid.layout.grid_template_columns)
    assert len(tracks) == 9  # a grid track for each column
    assert len(km.grid.children) == 9 * 4  # one header row and one row a key, in one grid
    text = " ".join(c.value for c in km.grid.children if isinstance(c, type(km.summary)))
    assert "600 req/min, 200k tok/min" in text and "of $50.00 monthly, resets" in text
    assert ">Disabled<" in text and ">Active<" in text and "Never used" in text
    assert [k["name"] for k in sorted(km.data, key=lambda k: k["name"])] == [
        "alpha",
        "beta",
        "gamma",
    ]

    def names() -> list[str]:
        cells = km.grid.children[9::9]
        return [c.value.split("<b>")[1].split("</b>")[0] for c in cells]

    assert names() == ["alpha", "beta", "gamma"]
    km.grid.children[0].click()  # the same column again: reversed
    assert names() == ["gamma", "beta", "alpha"]
    km.grid.children[5].click()  # Spend / budget
    assert km.sort_by == "spend" and km.grid.children[5].description.endswith("▼")
