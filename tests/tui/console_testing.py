"""Helpers shared by the console tests (imported by them; conftest only holds fixtures)."""

from __future__ import annotations

import asyncio
import io
import time
from typing import Callable

from rich.console import Console
from textual.widgets import Static


def plain(renderable, width: int = 200) -> str:
    """What a Rich renderable (Text, Table…) reads as, without colours."""
    console = Console(width=width, color_system=None, file=io.StringIO())
    console.print(renderable)
    return console.file.getvalue()


def static_text(app, selector: str, width: int = 200, screen=None) -> str:
    """The text a Static shows now: on ``screen``, else on the main screen
    (even while the help screen is over it)."""
    screen = screen or app.screen_stack[0]
    return plain(screen.query_one(selector, Static).content, width)


async def wait_until(pilot, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Let the app run until ``predicate()`` holds: commands run in a thread."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await pilot.pause(0.02)


def open_in_console(db, scenario, size: tuple[int, int]) -> None:
    """Open the run file as ``migrate-tui --db FILE`` does, run ``scenario(app, pilot, migration)``, then
    quit with q and see the console exit."""
    from engine.migration import Migration
    from tui.app import MigrationConsole

    migration = Migration.open(str(db))

    async def main():
        app = MigrationConsole(migration)
        async with app.run_test(size=size) as pilot:
            await pilot.pause(0.3)
            await scenario(app, pilot, migration)
            await pilot.press("q")
            await wait_until(pilot, lambda: app.return_code == 0, timeout=30)

    try:
        asyncio.run(main())
    finally:
        migration.close()


def start_in_console(migration, scenario, size: tuple[int, int]):
    """Start the run in the console as ``migrate-tui --db FILE SRC DST`` does, wait until it runs, then run
    ``scenario(app, pilot)``; returns the app once it has exited."""
    from tui.app import MigrationConsole

    async def main():
        app = MigrationConsole(migration, start_run=True)
        async with app.run_test(size=size) as pilot:
            await wait_until(pilot, lambda: migration.snapshot().state == "running", timeout=20)
            await scenario(app, pilot)
        return app

    return asyncio.run(main())


def run_console(argv: list[str], scenario, monkeypatch, size: tuple[int, int]) -> int:
    """``migrate-tui ARGV`` from start to end (``tui.cli.run``: its exit code is returned, its last words are
    on stderr), with the console it opens run headless and driven by ``scenario(app, pilot)``, which ends it."""
    from textual.app import App

    from tui import cli
    from tui.app import MigrationConsole

    def run_headless(app, **kwargs):
        async def drive(pilot):
            await scenario(app, pilot)

        return App.run(app, headless=True, size=size, auto_pilot=drive)

    monkeypatch.setattr(MigrationConsole, "run", run_headless)
    return cli.run(argv)
