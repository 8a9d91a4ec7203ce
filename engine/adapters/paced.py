"""An adapter that answers listings slowly, like a network mount: for demos and responsiveness tests."""

from __future__ import annotations

import time

from engine.adapters.base import Entry, FSAdapter


class PacedAdapter:
    def __init__(self, inner: FSAdapter, list_delay: float):
        self.inner = inner
        self.list_delay = list_delay

    def list(self, path: str, specials: list | None = None) -> list[Entry]:
        time.sleep(self.list_delay)
        return self.inner.list(path, specials)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)
