"""The web UI's palette as data, for anything else that should look like the same product
(the Jupyter widgets, notebooks' HTML output). ``static/app.css`` declares the same values
as CSS variables; tests/test_ui_assets.py keeps the two equal.

Colours were chosen for contrast: text, muted text and the status colours on their soft
backgrounds pass WCAG AA in both themes (the browser tests run axe-core on every page).
"""

from __future__ import annotations

LIGHT: dict[str, str] = {
    "bg": "#f6f7f9",
    "surface": "#ffffff",
    "surface-2": "#f0f2f5",
    "border": "#d9dde3",
    "text": "#1b1f24",
    "muted": "#57606a",
    "accent": "#4338ca",
    "accent-text": "#ffffff",
    "accent-soft": "#e8e7fb",
    "ok": "#176f2c",
    "ok-soft": "#dcf5e3",
    "warn": "#8a5300",
    "warn-soft": "#fdf0d5",
    "bad": "#b42318",
    "bad-soft": "#fde4e1",
    "focus": "#2563eb",
    # Chart series, in order.
    "c1": "#4f46e5",
    "c2": "#0e9f8e",
    "c3": "#d97706",
    "c4": "#db2777",
    "c5": "#2563eb",
    "c6": "#65a30d",
    "c7": "#7c8594",
}
DARK: dict[str, str] = {
    "bg": "#0f1216",
    "surface": "#171b21",
    "surface-2": "#1f242c",
    "border": "#2f3641",
    "text": "#e6e9ee",
    "muted": "#9aa4b2",
    "accent": "#8b8cf8",
    "accent-text": "#0f1216",
    "accent-soft": "#272a4a",
    "ok": "#5fd283",
    "ok-soft": "#163222",
    "warn": "#f2b84b",
    "warn-soft": "#3a2c10",
    "bad": "#ff8a80",
    "bad-soft": "#3d1a18",
    "focus": "#7aa7ff",
    "c1": "#8b8cf8",
    "c2": "#34d3bf",
    "c3": "#f5a524",
    "c4": "#f472b6",
    "c5": "#60a5fa",
    "c6": "#a3e635",
    "c7": "#9aa4b2",
}
FONT = 'system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif'
MONO = 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace'
RADIUS_PX = 8


def css_variables(selector: str, dark: bool = False) -> str:
    """The palette as a CSS rule of custom properties (``--bg``, ``--accent``, ...)."""
    tokens = DARK if dark else LIGHT
    body = " ".join(f"--{name}: {value};" for name, value in tokens.items())
    return f"{selector} {{ {body} }}"
