"""The help screen: every key of the console, built from the app's own bindings."""

from __future__ import annotations

from typing import Iterable

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


class HelpScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "dismiss", "Close help"),
        Binding("question_mark", "dismiss", "Close help", show=False),
        Binding("q", "dismiss", "Close help", show=False),  # as in less and man: q leaves the help, not the run
    ]

    def __init__(self, keys: Iterable[tuple[str, str]]) -> None:
        """``keys``: (key as shown, what it does), in display order."""
        super().__init__()
        self._keys = list(keys)

    def compose(self) -> ComposeResult:
        table = Table.grid(padding=(0, 3))
        table.add_column(style="bold cyan", justify="right")
        table.add_column()
        for key, meaning in self._keys:
            table.add_row(key, meaning)
        table.add_row("escape", "close this help")
        with Vertical(id="help-box") as box:
            box.border_title = "Keys"
            box.border_subtitle = "escape closes"
            yield Static(table, id="help-keys")
