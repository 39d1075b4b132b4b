"""Settings are declared once; the docs are generated from the declaration."""

from __future__ import annotations

from pathlib import Path

import pytest

from conduit_tornado.core.settings import Settings, settings_markdown


def test_settings_doc_is_generated_from_the_model() -> None:
    doc = Path(__file__).resolve().parent.parent / "docs" / "settings.md"
    assert doc.read_text() == settings_markdown(), (
        "run: conduit-tornado settings > docs/settings.md"
    )


def test_every_setting_has_a_description() -> None:
    assert all(field.description for field in Settings.model_fields.values())


def test_environment_and_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONDUIT_PORT", "6001")
    monkeypatch.setenv("CONDUIT_CONFIG", "")  # empty variables mean unset (compose files)
    assert Settings().port == 6001
    assert Settings().config is None
    assert Settings(port=7000).port == 7000
    monkeypatch.setenv("CONDUIT_PORT", "not-a-port")
    with pytest.raises(ValueError, match="port"):
        Settings()
