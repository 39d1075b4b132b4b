"""JupyterHub as the identity layer, with a real hub on loopback: the `jupyterhub` package
(DummyAuthenticator, SimpleLocalProcessSpawner), configurable-http-proxy from npm
(tests/chp.py), and the gateway as a hub-managed service (conduit_jupyter.hub's helpers, as
in docs/jupyterhub.md) in front of the fake OpenAI provider.

Browsers are HTTP clients that keep cookies and follow redirects: each signs in to the hub,
then to the gateway through Hub OAuth. Everything goes through the hub's proxy, which
forwards /services/conduit/... to the gateway with the prefix kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpcore2  # noqa: F401  (httpx2 imports it at its first request: here, not on the loop)
import httpx2
import pytest
from playwright.async_api import async_playwright

from conduit_tornado.api.routes import mount_prefix, routes
from conduit_tornado.config_file import parse_config
from conduit_tornado.core.settings import Settings
from conduit_tornado.hub import enabled
from conduit_tornado.hub.policy import PolicyError, load_policy
from conduit_tornado.server.application import GatewayApplication
from tests.chp import chp_command
from tests.conftest import MASTER_KEY, GatewayFactory, free_port
from tests.fakes.providers import API_KEY, FakeProviders
from tests.npm_pinned import ProvisionError
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "/services/conduit"
MASTER = "sk-master-" + secrets.token_hex(16)
TESTER = secrets.token_hex(32)  # the test's own hub API token (a service with admin scopes)
MODEL = "gpt-4o-mini"
BUDGET = 0.0001  # USD per user: a few requests of the fake at the prices below
ASK = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}


# -- without a hub: the prefix, hub mode's switch, the config section ----------------------


def test_the_prefix_comes_from_the_setting_or_the_hubs_service_prefix() -> None:
    hub_service = {"JUPYTERHUB_SERVICE_NAME": "conduit", "JUPYTERHUB_SERVICE_PREFIX": "/s/c/"}
    # A single-user server has a service prefix too (its own), but no service name.
    single_user = {"JUPYTERHUB_SERVICE_PREFIX": "/user/ana/", "JUPYTERHUB_API_TOKEN": "t"}
    assert mount_prefix(Settings(), {}) == "/"
    assert mount_prefix(Settings(), hub_service) == "/s/c"
    assert mount_prefix(Settings(), single_user) == "/"
    assert mount_prefix(Settings(base_path="/gw/"), hub_service) == "/gw"
    with pytest.raises(ValueError, match="base_path"):
        Settings(base_path="/a b/")
    # The busiest routes keep the direct dispatch under a prefix of plain characters.
    plain = GatewayApplication(routes("/services/conduit")).plain_routes
    assert "/services/conduit/v1/chat/completions" in plain
    assert enabled(Settings(), {**hub_service, "JUPYTERHUB_API_TOKEN": "t"})
    assert not enabled(Settings(), single_user)
    assert enabled(Settings(jupyterhub="on"), {})
    assert not enabled(Settings(jupyterhub="off"), {**hub_service, "JUPYTERHUB_API_TOKEN": "t"})


def test_every_hub_route_chooses_who_may_call_it() -> None:
    """Deny by default, as tests/test_routes.py holds the main table to: only the OAuth
    round trip and the redirect to the UI are public; the spawner's route is admin."""
    from conduit_tornado.api.base import AdminHandler, PublicHandler
    from conduit_tornado.hub.handlers import HubSessionHandler, hub_routes

    kinds = {}
    for pattern, handler in hub_routes("/p"):
        assert issubclass(handler, PublicHandler | AdminHandler | HubSessionHandler), pattern
        kinds[pattern] = "public" if issubclass(handler, PublicHandler) else handler.__name__
    assert [p for p, kind in kinds.items() if kind == "public"] == [
        "/p/hub/login",
        "/p/oauth_callback",
        "/p/?",
    ]
    assert kinds["/p/hub/api/users/([^/]+)/environment"] == "EnvironmentHandler"
    assert issubclass(HubSessionHandler, PublicHandler | AdminHandler) is False


@pytest.mark.asyncio
async def test_every_route_is_served_under_the_prefix(start_gateway: GatewayFactory) -> None:
    gw = await start_gateway(base_path="/services/conduit.x")  # a dot: escaped, not a wildcard
    assert gw.url.endswith("/services/conduit.x")
    root = gw.url.removesuffix("/services/conduit.x")
    admin = {"Authorization": f"Bearer {MASTER_KEY}"}
    async with httpx2.AsyncClient(timeout=10) as http:
        created = await http.post(f"{gw.url}/admin/v1/keys", json={"name": "k"}, headers=admin)
        assert created.status_code == 201
        key = {"Authorization": f"Bearer {created.json()['key']}"}
        assert (await http.get(f"{gw.url}/v1/models", headers=key)).status_code == 200
        assert (await http.get(f"{gw.url}/health/live")).status_code == 200
        page = await http.get(f"{gw.url}/ui/")
        assert page.status_code == 200 and 'src="js/app.js"' in page.text  # relative assets
        assert (await http.get(f"{gw.url}/ui/js/api.js")).status_code == 200
        for outside in ("/v1/models", "/services/conduitxx/v1/models", "/admin/v1/keys"):
            missed = await http.get(root + outside, headers=admin)
            assert missed.status_code == 404 and missed.json()["error"]["code"] == "unknown_url"


def test_the_config_files_jupyterhub_section(tmp_path: Path) -> None:
    section = {
        "user": {"max_budget": 5, "budget_duration": "monthly", "rpm": 60},
        "groups": {
            "students": {"max_budget": 200, "user": {"max_budget": 2}},
            "staff": {"max_budget": 1000},
        },
    }
    parse_config({"jupyterhub": section})  # the gateway's own reader accepts the section
    path = tmp_path / "conduit.yaml"
    path.write_text(json.dumps({"models": [], "jupyterhub": section}))
    policy = load_policy(path)
    assert policy.group_of(["staff", "students"]) == "students"  # first listed in the file
    assert policy.group_of(["other"]) is None
    assert policy.user_limits("students").max_budget == 2
    assert policy.user_limits("staff") == policy.user and policy.user.rpm == 60
    assert load_policy(None).user.max_budget is None
    path.write_text(json.dumps({"jupyterhub": {"user": {"max_budget": -1}}}))
    with pytest.raises(PolicyError, match="max_budget"):
        load_policy(path)


# -- a real hub -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chp() -> Path:
    try:
        return chp_command()
    except ProvisionError as exc:
        pytest.skip(str(exc))


def hub_config(tmp: Path, ports: dict[str, int], provider: str, chp: Path) -> str:
    gateway_config = tmp / "conduit.yaml"
    gateway_config.write_text(
        json.dumps(  # JSON is YAML
            {
                "providers": [
                    {"name": "fake", "type": "openai", "base_url": provider, "api_key": API_KEY}
                ],
                "models": [
                    {
                        "name": MODEL,
                        "deployments": [{"provider": "fake", "model": MODEL}],
                        "pricing": {"input_per_mtok": 1000, "output_per_mtok": 1000},
                    }
                ],
                "jupyterhub": {
                    "user": {"max_budget": BUDGET, "budget_duration": "monthly", "rpm": 600},
                    "groups": {
                        "staff": {"max_budget": 10.0, "user": {"max_budget": 1.0, "rpm": 1000}}
                    },
                },
            }
        )
    )
    pythonpath = os.pathsep.join([str(ROOT), str(ROOT / "jupyter_ext")])
    out = tmp / "spawned"
    out.mkdir()
    return f"""
import sys
from conduit_jupyter.hub import conduit_roles, conduit_service, pre_spawn_hook

c.JupyterHub.bind_url = "http://127.0.0.1:{ports["public"]}"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{ports["hub"]}"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{ports["proxy_api"]}"
c.ConfigurableHTTPProxy.command = [{str(chp)!r}]
c.ConfigurableHTTPProxy.pid_file = {str(tmp / "proxy.pid")!r}
# In memory: the hub commits to its database on its event loop, and a loaded machine's disk
# (8 test suites at once) has stalled it for minutes on a file's fsync.
c.JupyterHub.db_url = "sqlite:///:memory:"
c.JupyterHub.cookie_secret_file = {str(tmp / "cookie_secret")!r}
c.JupyterHub.pid_file = {str(tmp / "hub.pid")!r}
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.admin_users = {{"root"}}
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {str(tmp / "home" / "{username}")!r}
c.Spawner.cmd = [sys.executable, "-m", "tests.hub_singleuser"]
c.Spawner.environment = {{"CONDUIT_TEST_OUT": {str(out)!r}, "PYTHONPATH": {pythonpath!r}}}
c.Spawner.start_timeout = 30
c.Spawner.http_timeout = 30
c.Spawner.pre_spawn_hook = pre_spawn_hook(
    master_key={MASTER!r}, gateway="http://127.0.0.1:{ports["gateway"]}",
    openai_base_url="http://127.0.0.1:{ports["public"]}{PREFIX}/v1",
)
c.JupyterHub.services = [
    conduit_service(
        port={ports["gateway"]},
        master_key={MASTER!r},
        config={str(gateway_config)!r},
        environment={{
            "CONDUIT_STORE": "memory",
            "CONDUIT_JUPYTERHUB_SYNC_INTERVAL": "1",
            "PYTHONPATH": {pythonpath!r},
        }},
    ),
    {{"name": "tester", "api_token": {TESTER!r}}},
]
c.JupyterHub.load_roles = conduit_roles() + [
    {{
        "name": "tester",
        "scopes": ["admin:users", "admin:servers", "admin:groups", "list:users", "read:users"],
        "services": ["tester"],
    }}
]
"""


@dataclass
class Hub:
    url: str
    out: Path
    log: Path
    api: httpx2.AsyncClient  # the tester service's token

    async def browser(self, user: str) -> httpx2.AsyncClient:
        """A browser signed in to the hub as ``user`` (any password: DummyAuthenticator)
        and then to the gateway through Hub OAuth."""
        client = httpx2.AsyncClient(base_url=self.url, follow_redirects=True, timeout=30)
        page = await client.get("/hub/login")
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', page.text)
        assert xsrf is not None, page.text[:500]
        signed_in = await client.post(
            "/hub/login?next=/hub/home",  # not /hub/spawn: servers start when the test says
            data={"username": user, "password": "any", "_xsrf": xsrf.group(1)},
        )
        assert signed_in.status_code == 200, signed_in.text[:500]
        landed = await client.get(f"{PREFIX}/hub/login", params={"next": f"{PREFIX}/ui/"})
        assert landed.status_code == 200 and landed.url.path == f"{PREFIX}/ui/", landed.url
        assert "<title>Conduit</title>" in landed.text
        return client


async def wait_for(check: Callable[[], Any], what: str, seconds: float = 30.0) -> Any:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        try:
            result = await check()
        except httpx2.TransportError:
            result = None
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def running_hub(tmp_path: Path, chp: Path) -> AsyncIterator[Hub]:
    """The hub, started on the test's own loop (the fake provider serves on it)."""
    fake = FakeProviders()
    await fake.start()
    ports = {name: free_port() for name in ("public", "hub", "proxy_api", "gateway")}
    (tmp_path / "jupyterhub_config.py").write_text(
        hub_config(tmp_path, ports, fake.url + "/v1", chp)
    )
    log = tmp_path / "hub.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "jupyter_ext")])}
    for name in ("CONDUIT_MASTER_KEY", "CONDUIT_CONFIG", "CONDUIT_MONGODB_URI", "CONDUIT_STORE"):
        env.pop(name, None)
    with log.open("wb") as sink:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "jupyterhub",
            "-f",
            str(tmp_path / "jupyterhub_config.py"),
            cwd=tmp_path,
            env=env,
            stdout=sink,
            stderr=asyncio.subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{ports['public']}"
    api = httpx2.AsyncClient(
        base_url=url + "/hub/api", headers={"Authorization": f"token {TESTER}"}, timeout=30
    )
    try:

        async def gateway_up() -> bool:
            if process.returncode is not None:
                raise AssertionError("the hub exited:\n" + log.read_text()[-3000:])
            async with httpx2.AsyncClient(timeout=5) as probe:
                answer = await probe.get(f"{url}{PREFIX}/health/ready")
            return answer.status_code == 200

        await wait_for(gateway_up, "the hub, its proxy and the gateway service", 60)
        yield Hub(url, tmp_path / "spawned", log, api)
    finally:
        await api.aclose()
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)  # the hub stops its service and proxy
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()
        await fake.stop()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.mark.asyncio
@pytest.mark.timeout(180)
async def test_hub_users_each_get_a_key_a_budget_and_their_own_view(
    tmp_path: Path, chp: Path
) -> None:
    async with running_hub(tmp_path, chp) as hub:
        await two_users(hub)


async def two_users(hub: Hub) -> None:
    created = await hub.api.post("/users", json={"usernames": ["ana", "bob"]})
    assert created.status_code == 201, created.text
    staff = await hub.api.post("/groups/staff", json={"users": ["bob"]})
    assert staff.status_code == 201, staff.text

    # -- each signs in through Hub OAuth and finds a key of their own ---------------------
    ana, bob, root = [await hub.browser(u) for u in ("ana", "bob", "root")]
    try:
        me = {}
        for name, client in (("ana", ana), ("bob", bob)):
            answer = await client.get(f"{PREFIX}/hub/api/me")
            assert answer.status_code == 200, answer.text
            me[name] = answer.json()
            assert me[name]["user"] == name and me[name]["admin"] is False
            assert me[name]["key"]["name"] == f"hub:{name}"
            assert str(me[name]["secret"]).startswith("condt_"), me[name]  # created now: shown once
        assert me["ana"]["key"]["max_budget"] == BUDGET and me["ana"]["key"]["group"] is None
        # bob's hub group "staff": the key group hub:staff, and the staff's own user limits
        assert me["bob"]["key"]["group"] == "hub:staff" and me["bob"]["key"]["max_budget"] == 1.0
        again = (await ana.get(f"{PREFIX}/hub/api/me")).json()
        assert again["key"]["id"] == me["ana"]["key"]["id"] and again["secret"] is None

        # -- the OpenAI routes through the hub's proxy, each under their own budget -------
        ana_key, bob_key = me["ana"]["secret"], me["bob"]["secret"]
        v1 = f"{PREFIX}/v1/chat/completions"
        async with httpx2.AsyncClient(base_url=hub.url, timeout=30) as http:
            statuses = []
            for _ in range(30):
                answer = await http.post(v1, json=ASK, headers=bearer(ana_key))
                statuses.append(answer.status_code)
                if answer.status_code != 200:
                    break
            assert statuses[0] == 200 and statuses[-1] == 429, statuses
            assert "budget" in answer.json()["error"]["message"].lower()
            served = await http.post(v1, json=ASK, headers=bearer(bob_key))
            assert served.status_code == 200, served.text
            assert served.json()["choices"][0]["message"]["content"] == "Hello from the fake"

            # -- each sees only their own usage; the admin API is not theirs -------------
            usage = {}
            for name, client in (("ana", ana), ("bob", bob)):
                answer = await client.get(f"{PREFIX}/hub/api/me/usage")
                assert answer.status_code == 200, answer.text
                usage[name] = answer.json()
            served_ana = usage["ana"]["totals"]["requests"] - usage["ana"]["totals"]["errors"]
            assert served_ana == statuses.count(200)
            assert usage["bob"]["totals"]["requests"] == 1
            assert usage["ana"]["key"]["spend"] >= BUDGET
            # the same view with the key alone (the widget in a user's notebook)
            by_key = await http.get(f"{PREFIX}/hub/api/me/usage", headers=bearer(bob_key))
            assert by_key.json()["totals"] == usage["bob"]["totals"]
            for client in (ana, bob):
                assert (await client.get(f"{PREFIX}/admin/v1/keys")).status_code == 401
            refused = await http.get(f"{PREFIX}/admin/v1/keys", headers=bearer(ana_key))
            assert refused.status_code == 401

            # -- a hub admin is a gateway admin: every key, and changes with the CSRF token
            root_me = (await root.get(f"{PREFIX}/hub/api/me")).json()
            assert root_me["admin"] is True and root_me["csrf"]
            keys = (await root.get(f"{PREFIX}/admin/v1/keys")).json()["data"]
            assert {"hub:ana", "hub:bob", "hub:root"} <= {k["name"] for k in keys}
            ui_session = (await root.get(f"{PREFIX}/ui/api/session")).json()
            # A hub service: the page asks the hub who this browser is.
            assert ui_session["via"] == "host" and ui_session["hub"] is True
            reset = f"{PREFIX}/admin/v1/keys/{me['ana']['key']['id']}/spend"
            assert (await root.post(reset, json={"spend": 0})).status_code == 401  # no token
            csrf = {root_me["csrf_header"]: root_me["csrf"]}
            assert (await root.post(reset, json={"spend": 0}, headers=csrf)).status_code == 200
            assert (await http.post(v1, json=ASK, headers=bearer(ana_key))).status_code == 200

            # -- the web UI: ana's own page, root's whole gateway -------------------------
            await web_ui(hub)

            # -- rotation on request: the old secret stops, the new one serves -----------
            headers = {me["ana"]["csrf_header"]: me["ana"]["csrf"]}
            assert (await ana.post(f"{PREFIX}/hub/api/me/rotate", json={})).status_code == 401
            rotated = await ana.post(f"{PREFIX}/hub/api/me/rotate", json={}, headers=headers)
            assert rotated.status_code == 200, rotated.text
            new_key = rotated.json()["key"]
            assert (await http.post(v1, json=ASK, headers=bearer(ana_key))).status_code == 401
            # the new secret is ana's key (over budget again after the request above)
            assert (await http.post(v1, json=ASK, headers=bearer(new_key))).status_code == 429

            # -- a spawned server gets the user's key in its environment ------------------
            spawned = await hub.api.post("/users/ana/server")
            assert spawned.status_code in (201, 202), spawned.text
            out = hub.out / "ana.json"

            async def written() -> bool:
                return out.exists()

            await wait_for(written, "ana's server to start and write what it saw")
            seen = json.loads(out.read_text())
            assert seen.get("error") is None, seen
            assert seen["OPENAI_BASE_URL"] == f"{hub.url}{PREFIX}/v1"
            assert seen["models"] == [MODEL]
            assert seen["me"] == {"user": "ana", "key": "hub:ana", "admin": False}
            # each spawn gives a new secret: the one shown before stops working
            assert (await http.post(v1, json=ASK, headers=bearer(new_key))).status_code == 401
            assert (
                seen["key_prefix"]
                == (await ana.get(f"{PREFIX}/hub/api/me")).json()["key"]["prefix"][:10]
            )

            # -- a user deleted from the hub loses their key ------------------------------
            assert (await hub.api.delete("/users/bob")).status_code == 204

            async def revoked() -> bool:
                answer = await http.post(v1, json=ASK, headers=bearer(bob_key))
                return answer.status_code == 401

            await wait_for(revoked, "bob's key to be revoked", 15)
            keys = (await root.get(f"{PREFIX}/admin/v1/keys")).json()["data"]
            assert "hub:bob" not in {k["name"] for k in keys}
            assert (await bob.get(f"{PREFIX}/hub/api/me")).status_code == 401
    finally:
        for client in (ana, bob, root):
            await client.aclose()


async def web_ui(hub: Hub) -> None:
    """In Chromium: sign in to the hub, open the gateway's UI, sign in with JupyterHub."""
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for user, page_id, sees in (("ana", "mine", "hub:ana"), ("root", "keys", "hub:bob")):
                context = await browser.new_context()
                page = await context.new_page()
                await page.goto(f"{hub.url}/hub/login?next=/hub/home")
                await page.fill("#username_input", user)
                await page.fill("#password_input", "any")
                await page.click("#login_submit")
                await page.wait_for_url("**/hub/home")
                await page.goto(f"{hub.url}{PREFIX}/ui/")
                await page.get_by_role("link", name="Sign in with JupyterHub").click()
                await page.locator(f"[data-page='{page_id}'][data-ready]").wait_for()
                text = await page.locator("main").inner_text()
                assert sees in text, text
                if user == "ana":  # her own key and usage, and nothing of the admin's
                    assert "Your key" in text and "hub:bob" not in text
                    assert await page.locator("#nav").is_hidden()
                await context.close()
        finally:
            await browser.close()


# -- a user's own usage widget, with their key alone ----------------------------------------


@pytest.mark.asyncio
@pytest.mark.blocks_loop(reason="ipywidgets builds its widget models on the shared loop")
async def test_my_usage_and_sign_in_limits_in_hub_mode(
    start_gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MyUsage in a user's notebook: OPENAI_BASE_URL and OPENAI_API_KEY are all it has. The
    hub routes are mounted as in hub mode; a key's own view never asks the hub."""
    import tornado.httpserver
    from conduit_jupyter.hub import UserClient
    from conduit_jupyter.widgets import MyUsage

    from conduit_tornado import AdminClient
    from conduit_tornado.api.routes import make_app
    from conduit_tornado.hub import handlers as hub_handlers
    from conduit_tornado.hub.identity import Hub as GatewayHub
    from conduit_tornado.hub.policy import HubPolicy

    gw = await start_gateway(base_path=PREFIX)
    assert gw.ctx is not None
    env = {"JUPYTERHUB_API_TOKEN": "not-used", "JUPYTERHUB_SERVICE_NAME": "conduit"}
    hub = GatewayHub(gw.ctx, HubPolicy(), PREFIX, env)
    server = tornado.httpserver.HTTPServer(make_app(gw.ctx, hub=hub))
    port = free_port()
    server.listen(port, "127.0.0.1")
    base = f"http://127.0.0.1:{port}{PREFIX}/v1"
    widgets: list[MyUsage] = []
    try:
        async with AdminClient(gw.url, MASTER_KEY) as admin:
            await admin.create_provider(name="mock", type="mock")
            await admin.create_model(
                name=MODEL,
                deployments=[{"provider": "mock", "model": "m"}],
                pricing={"input_per_mtok": 1000, "output_per_mtok": 1000},
            )
            secrets_of = {}
            for user in ("ana", "bob"):
                created = await admin.create_key(
                    name=f"hub:{user}", max_budget=5, metadata={"hub_user": user}
                )
                secrets_of[user] = created["key"]
        async with httpx2.AsyncClient(timeout=30) as http:
            for _ in range(2):
                answer = await http.post(
                    base + "/chat/completions", json=ASK, headers=bearer(secrets_of["ana"])
                )
                assert answer.status_code == 200, answer.text
        ana = MyUsage(url=base, key=secrets_of["ana"])
        widgets.append(ana)
        await ana.refresh()
        assert "ana" in ana.key_info.value and "hub:ana" in ana.key_info.value
        assert "of $5.00" in ana.key_info.value  # the budget, in words
        assert "2 requests" in ana.summary.value and "<svg" in ana.chart.value
        assert list(ana.series) == ["hub:ana"] and ana.series["hub:ana"][-1] > 0
        bob = MyUsage(url=base, key=secrets_of["bob"])
        widgets.append(bob)
        await bob.refresh()  # bob's key sees bob's usage: none
        assert "0 requests" in bob.summary.value and "No usage" in bob.chart.value
        # A rotated or revoked key: a sentence saying what to do, not a traceback.
        stale = MyUsage(url=base, key="condt_" + "x" * 40)
        widgets.append(stale)
        stale._spawn(stale.refresh())
        await stale.settle()
        assert "restart your server from the hub" in stale.status.value.lower()
        # Sign-ins begun are held in memory until finished or expired: a flood is capped.
        monkeypatch.setattr(hub_handlers, "MAX_PENDING_SIGN_INS", 3)
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}{PREFIX}") as http:
            begun = [(await http.get("/hub/login")).status_code for _ in range(4)]
            assert begun == [302, 302, 302, 429], begun
            evil = await http.get("/hub/login", params={"next": "//evil.example/"})
            assert evil.status_code == 429  # still capped
        monkeypatch.setattr(hub_handlers, "MAX_PENDING_SIGN_INS", 100)
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}{PREFIX}") as http:
            for bad in ("//evil.example/", "https://evil.example/", "/elsewhere/"):
                to_hub = await http.get("/hub/login", params={"next": bad})
                assert to_hub.status_code == 302
                state = to_hub.headers["location"].split("state=")[1].split("&")[0]
                # the page after sign-in is ours whatever next said (no open redirect)
                assert hub.auth.get_next_url(state) == f"{PREFIX}/ui/"
        client = UserClient(base, secrets_of["bob"])
        try:
            by_model = await client.usage(group_by="model")
            assert by_model["data"] == [] and by_model["key"]["name"] == "hub:bob"
        finally:
            await client.aclose()
    finally:
        for widget in widgets:
            await widget.aclose()
        server.stop()
        await server.close_all_connections()
        await hub.close()
