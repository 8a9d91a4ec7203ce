"""Fixtures for the console tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def notes(monkeypatch):
    """Attach to an app; returns the list of messages it notifies from then on."""

    def attach(app) -> list[str]:
        seen: list[str] = []
        original = app.notify

        def record(message, **kwargs):
            seen.append(message)
            original(message, **kwargs)

        monkeypatch.setattr(app, "notify", record)
        return seen

    return attach
