"""Widget handlers called as JupyterLab >= 4.4 calls them: on a kernel subshell, another
thread with its own running event loop, while the kernel's loop owns the HTTP client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import pytest_asyncio
from conduit_jupyter.widgets import KeyManager, Playground, UsageDashboard

from conduit_tornado import AdminClient, AdminError, Gateway
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
        await admin.create_provider(name="mock", type="mock", options={"words": 4})
        await admin.create_model(name="demo", deployments=[{"provider": "mock", "model": "m"}])
    return gateway


async def on_subshell(action: Callable[[], None], settle: Callable[[], object]) -> None:
    """Run `action` (a click) on a fresh thread inside its own running loop, as ipykernel 7's
    subshells do, and wait there until the widget says its work is done. The test's loop (the
    one that made the widget and its client) stays free meanwhile."""

    async def subshell() -> None:
        action()
        await settle()  # type: ignore[misc]

    await asyncio.to_thread(asyncio.run, subshell())


async def test_save_from_a_subshell_saves_and_leaves_edit_mode(gw: Gateway) -> None:
    km = KeyManager(url=gw.url, master_key=MASTER_KEY)
    await km.refresh()  # the client is now in use on this (the kernel's) loop
    km.name.value = "analyst"
    km.limits["rpm"].value = "30"
    await on_subshell(km.create_button.click, km.settle)
    assert km.status.value == "", km.status.value
    key_id = km.data[0]["id"]

    await on_subshell(km.row_buttons(key_id)["Edit"].click, km.settle)
    km.limits["rpm"].value = "60"
    for _ in range(3):  # the issue saw 3 failures out of 3
        await on_subshell(km.save_button.click, km.settle)
        assert "different event loop" not in km.status.value
    assert "Error" not in km.status.value and "⚠" not in km.status.value, km.status.value
    assert km.editing is None and km.save_button.disabled  # out of edit mode
    assert km.data[0]["rpm"] == 60  # the table shows the saved value
    async with AdminClient(gw.url, MASTER_KEY) as admin:
        assert (await admin.get_key(key_id))["rpm"] == 60

    await on_subshell(km.row_buttons(key_id)["Disable"].click, km.settle)
    await on_subshell(km.row_buttons(key_id)["Rotate"].click, km.settle)
    assert km.last_secret.startswith("condt_") and km.data[0]["enabled"] is False
    await on_subshell(km.refresh_button.click, km.settle)
    assert km.status.value == ""


async def test_dashboard_and_playground_from_a_subshell(gw: Gateway) -> None:
    dash = UsageDashboard(url=gw.url, master_key=MASTER_KEY)
    await dash.refresh()

    def pick_30_days() -> None:
        dash.range.value = 30

    await on_subshell(pick_30_days, dash.settle)
    assert len(dash.days) == 30 and dash.status.value == "", dash.status.value
    await on_subshell(dash.refresh_button.click, dash.settle)
    assert dash.status.value == ""

    pg = Playground(url=gw.url, master_key=MASTER_KEY)
    await pg.refresh()
    await on_subshell(pg.temp_key_button.click, pg.settle)
    assert pg.key.value.startswith("condt_"), pg.status.value
    pg.model.value, pg.prompt.value = "demo", "hello"
    await on_subshell(pg.send_button.click, pg.settle)
    assert pg.text.startswith("Mock reply: hello"), pg.status.value


async def test_awaiting_an_action_from_another_loop_runs_it_on_the_owner(gw: Gateway) -> None:
    km = KeyManager(url=gw.url, master_key=MASTER_KEY)
    await km.refresh()

    async def from_code_on_another_loop() -> None:
        await km.refresh()

    await asyncio.to_thread(asyncio.run, from_code_on_another_loop())
    assert km.data == [] and km.status.value == ""


async def test_a_gateway_that_is_down_is_one_sentence_and_one_error_type() -> None:
    from tests.conftest import free_port

    url = f"http://127.0.0.1:{free_port()}"  # held, never listening: connection refused
    km = KeyManager(url=url, master_key=MASTER_KEY)
    with pytest.raises(AdminError) as caught:
        await km.refresh()
    assert url in caught.value.message and "Is it running?" in caught.value.message
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    await on_subshell(km.refresh_button.click, km.settle)
    assert url in km.status.value and "Traceback" not in km.status.value


async def test_a_status_clears_when_the_next_action_succeeds(gw: Gateway) -> None:
    km = KeyManager(url=gw.url, master_key=MASTER_KEY)
    km.create_button.click()  # no name: an error naming the field
    await km.settle()
    assert "Name" in km.status.value
    await on_subshell(km.refresh_button.click, km.settle)
    assert km.status.value == ""
