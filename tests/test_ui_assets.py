"""The web UI's files as shipped: every module a page imports is there, nothing is loaded
from another origin, and the package data rules include them all."""

from __future__ import annotations

import re
import tomllib
from fnmatch import fnmatch
from pathlib import Path

from conduit_tornado.ui import theme
from conduit_tornado.ui.handlers import ASSETS, STATIC

REPO = Path(__file__).resolve().parent.parent
_IMPORT = re.compile(
    r"""(?:^|\s)(?:import|from)\s*(?:[\w{}\s,*]*\sfrom\s*)?["'](\.[^"']+)["']""", re.M
)
_REFERENCE = re.compile(r"""(?:src|href)=["']([^"'#]+)["']""")


def test_every_import_and_reference_is_shipped() -> None:
    checked = 0
    for name, asset in ASSETS.items():
        text = asset.body.decode("utf-8", "replace")
        base = Path(name).parent
        targets = []
        if name.endswith(".js"):
            targets = _IMPORT.findall(text)
        elif name.endswith(".html"):
            targets = _REFERENCE.findall(text)
        for target in targets:
            resolved = (base / target).as_posix()
            resolved = re.sub(r"(^|/)\./", r"\1", resolved)
            assert resolved in ASSETS, f"{name} refers to {target}, which is not shipped"
            checked += 1
    assert checked >= 20  # app.js alone imports a dozen modules


# Where an address would be loaded from: an attribute or property that loads (src, href,
# action), a CSS url() or @import, a module import, a fetch. Addresses shown as text (the
# providers' default base URLs) load nothing; the page's Content-Security-Policy
# (test_ui_security) refuses anything from elsewhere at run time as well.
_LOADS_ELSEWHERE = re.compile(
    r"""(?:src|href|action)\s*[=:]\s*[\[({]?\s*["'`](?:https?:)?//"""
    r"""|url\(\s*["']?(?:https?:)?//|@import"""
    r"""|(?:import|from)\s*\(?\s*["'`](?:https?:)?//"""
    r"""|(?:fetch|new\s+URL|new\s+(?:Event)?Source|new\s+WebSocket)\(\s*["'`](?:https?:|wss?:)?//"""
)


def test_nothing_loads_from_another_origin() -> None:
    for name, asset in ASSETS.items():
        text = asset.body.decode("utf-8", "replace")
        assert not _LOADS_ELSEWHERE.search(text), name
    # The check finds what it is for.
    for loading in (
        '<script src="https://cdn.example/x.js">',
        'h("img", { src: "https://x.example/a.png" })',
        "background: url(//x.example/a.png)",
        'import { x } from "https://x.example/m.js";',
        'await fetch("https://x.example/api")',
        '@import "x.css";',
    ):
        assert _LOADS_ELSEWHERE.search(loading), loading
    assert not _LOADS_ELSEWHERE.search('{ help: "Empty: https://api.openai.com/v1." }')


def test_package_data_covers_every_asset() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["conduit_tornado"]
    for path in STATIC.rglob("*"):
        if path.is_file():
            relative = path.relative_to(REPO / "conduit_tornado").as_posix()
            assert any(_glob_match(relative, p) for p in patterns), relative


def _glob_match(path: str, pattern: str) -> bool:
    """setuptools' glob: a * never crosses a slash."""
    parts, wanted = path.split("/"), pattern.split("/")
    return len(parts) == len(wanted) and all(map(fnmatch, parts, wanted))


def _declared(css: str, selector: str) -> dict[str, str]:
    start = css.index(selector + " {") + len(selector) + 2
    block = css[start : css.index("}", start)]
    return dict(re.findall(r"--([\w-]+):\s*(#[0-9a-f]{6})", block))


def test_stylesheet_and_theme_module_agree() -> None:
    css = ASSETS["app.css"].body.decode()
    assert _declared(css, ":root") == theme.LIGHT
    assert _declared(css, ':root:not([data-theme="light"])') == theme.DARK  # system dark
    assert _declared(css, ':root[data-theme="dark"]') == theme.DARK  # the toggle
    assert theme.css_variables(".x", dark=True).startswith(".x { --bg: #0f1216;")
