"""What a refresh costs: the console draws only what changed, lays the screen out again only
when a size may change, and redraws its busy panels about once a second unless a command or a
new state of the run asks for it at once. (Costs are measured in bench/console_overhead.py;
these tests check the behaviour, never a duration.)"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from console_testing import static_text, wait_until
from rich.text import Text

import tui.app
from tui.panels import Cell
from tui.samples import FakeController, sample_app

SIZE = (120, 36)


class Clock:
    """Stands in for time.monotonic in tui.app: moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = Clock()
    monkeypatch.setattr(tui.app, "monotonic", fake)
    return fake


def layouts_of(cell: Cell, monkeypatch) -> list[bool]:
    """From now on, whether each update of the cell asks for a new layout of the screen."""
    seen: list[bool] = []
    original = cell.update

    def update(content, *, layout=True):
        seen.append(layout)
        return original(content, layout=layout)

    monkeypatch.setattr(cell, "update", update)
    return seen


def with_found(snapshot, files: int):
    return replace(snapshot, src=replace(snapshot.src, files_discovered=files))


def test_a_cell_lays_out_again_only_when_its_size_may_change(monkeypatch):
    async def scenario():
        app = sample_app("running")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            main = app.screen_stack[0]
            found = main.query_one("#src-found", Cell)
            found.show_text(Text("11 files · 3 folders"))  # the first change after the first layout
            await pilot.pause()
            seen = layouts_of(found, monkeypatch)
            found.show_text(Text("12 files · 3 folders"))  # still one line: repainted in place
            found.show_text(Text("12 files · 3 folders"))  # the same text: nothing to do
            found.show_text(Text("x " * 200))  # wraps: its height changes
            await pilot.pause()
            found.show_text(Text("13 files · 3 folders"))  # one line again: height changes back
            await pilot.pause()
            title = main.query_one("#title", Cell)
            title_seen = layouts_of(title, monkeypatch)
            title.show_text(Text("a title far longer than the screen is wide " * 5))  # height: 1
            return list(seen), list(title_seen)  # as they are now: a refresh while the app closes is not ours

    seen, title_seen = asyncio.run(scenario())
    assert seen == [False, True, True]
    assert title_seen == [False]


def test_a_cell_lays_out_again_after_a_resize(monkeypatch):
    """A line drawn at one width may wrap at another: the width is part of what a cell remembers."""

    async def scenario():
        app = sample_app("running")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            found = app.screen_stack[0].query_one("#src-found", Cell)
            found.show_text(Text("12 files · 3 folders"))
            await pilot.resize_terminal(100, 36)
            await pilot.pause()
            seen = layouts_of(found, monkeypatch)
            found.show_text(Text("13 files · 3 folders"))
            return seen

    assert asyncio.run(scenario()) == [True]


def test_panels_redraw_about_once_a_second_the_title_at_every_poll(clock):
    async def scenario():
        controller = FakeController("running")
        app = sample_app(controller=controller, refresh_seconds=3600)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            snapshot = with_found(controller.snapshot(), 412_531)
            controller.set_snapshot(replace(snapshot, elapsed_s=snapshot.elapsed_s + 1))
            clock.now += 0.5
            app.refresh_view()
            held_back = static_text(app, "#src-found"), static_text(app, "#title")
            clock.now += 0.5
            app.refresh_view()
            drawn = static_text(app, "#src-found")
            return held_back, drawn

    (held_back, title), drawn = asyncio.run(scenario())
    assert "412,530 files" in held_back and "12m 35s" in title
    assert "412,531 files" in drawn


def test_a_command_or_a_new_state_of_the_run_is_drawn_at_once(clock):
    async def scenario():
        controller = FakeController("running")
        app = sample_app(controller=controller, refresh_seconds=3600)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            controller.set_snapshot(with_found(controller.snapshot(), 412_531))
            app.refresh_view(force=True)  # what a finished command does
            forced = static_text(app, "#src-found")
            paused = replace(with_found(controller.snapshot(), 412_532), state="paused",
                             src=replace(controller.snapshot().src, state="paused",
                                         files_discovered=412_532))
            controller.set_snapshot(paused)
            app.refresh_view()  # the clock has not moved: only the new state draws it
            return forced, static_text(app, "#src-found"), static_text(app, "#src-round")

    forced, found, heading = asyncio.run(scenario())
    assert "412,531 files" in forced
    assert "412,532 files" in found and "paused" in heading


def test_the_level_table_changes_cells_in_place(clock, monkeypatch):
    async def scenario():
        controller = FakeController("running")
        app = sample_app(controller=controller, refresh_seconds=3600)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            table = app.screen_stack[0].query_one("#levels-table")
            cleared = []
            original_clear = table.clear
            monkeypatch.setattr(table, "clear", lambda *a, **k: (cleared.append(1), original_clear(*a, **k)))
            snapshot = controller.snapshot()
            levels = (replace(snapshot.src.levels[0], pending=100_608),) + snapshot.src.levels[1:]
            controller.set_snapshot(replace(snapshot, src=replace(snapshot.src, levels=levels)))
            clock.now += 1
            app.refresh_view()
            await pilot.pause()
            first = [str(cell) for cell in table.get_row_at(0)]
            same_rows = (table.row_count, len(cleared))
            controller.retry()  # other levels: the table is rebuilt
            app.refresh_view(force=True)
            await pilot.pause()
            return first, same_rows, table.row_count, len(cleared)

    first, same_rows, rows_after, clears = asyncio.run(scenario())
    assert first == ["SRC", "5", "1,840", "100,608", "616", "1,212", "3"]
    assert same_rows == (6, 0)
    assert (rows_after, clears) == (6, 1)


def test_the_round_count_keeps_its_width_while_it_grows():
    async def scenario():
        controller = FakeController("running")
        base = controller.snapshot()
        controller.set_snapshot(replace(base, src=replace(base.src, round_completed=5)))
        app = sample_app(controller=controller)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            return static_text(app, "#src-progress .round-count").rstrip("\n")

    assert asyncio.run(scenario()) == "    5/1,840"  # as wide as "1,840/1,840"


def test_the_screen_follows_the_end_of_the_run_at_once():
    """No wait for the next poll: the command thread notices the engine's threads ending."""

    async def scenario():
        controller = FakeController("running")
        app = sample_app(controller=controller, refresh_seconds=3600)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            await pilot.pause(0.3)  # the command thread has seen the engine running
            controller.stop()  # the engine stops by itself (here: a fake one, told directly)
            await wait_until(pilot, lambda: "stopped" in static_text(app, "#title"))

    asyncio.run(scenario())
