"""What the panels say, read as text: formatting, escaping, gate reasons, levels."""

from __future__ import annotations

import asyncio
import dataclasses

from console_testing import static_text
from rich.console import Console

from tui import format as fmt
from tui.samples import FakeController, sample_app


def shown(sample: str, selector: str, size=(160, 50)) -> str:
    async def scenario():
        app = sample_app(sample)
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            return static_text(app, selector)

    return asyncio.run(scenario())


def test_display_path_escapes_undecodable_bytes_and_control_characters():
    assert fmt.display_path("bad\udcff") == "bad\\xff"
    assert fmt.display_path("a\udc80b") == "a\\x80b"
    assert fmt.display_path("tab\there\x1b[2J") == "tab\\there\\x1b[2J"
    assert fmt.display_path("Ünïcødé/日本語.txt") == "Ünïcødé/日本語.txt"


def test_durations_rates_and_ages():
    assert fmt.duration(None) == "—"
    assert fmt.duration(12.4) == "12s"
    assert fmt.duration(1189) == "19m 49s"
    assert fmt.duration(18_734) == "5h 12m 14s"
    assert fmt.duration(3 * 86400 + 3600) == "3d 01h 00m"
    assert fmt.rate(0) == "0"
    assert fmt.rate(3.25) == "3.2"
    assert fmt.rate(5412.7) == "5,413"
    assert fmt.bytes_per_second(486.2 * 1024**2) == "486.2 MiB/s"
    assert fmt.age(59) == "59s" and fmt.age(61) == "1m" and fmt.age(7300) == "2h"


def test_tail_keeps_the_end():
    assert fmt.tail("/tmp/migrate-tui-demo-x1/demo-src", 10) == "…/demo-src"
    assert fmt.tail("short", 10) == "short" and fmt.tail("abc", 1) == "…" and fmt.tail("abc", 0) == ""


def test_title_cuts_long_paths_from_the_left_so_both_leaves_show():
    async def scenario():
        controller = FakeController("running")
        long_src, long_dst = "/srv/" + "a" * 70 + "/source-leaf", "/srv/" + "b" * 70 + "/destination-leaf"
        controller._snapshot = dataclasses.replace(controller._snapshot, src_root=long_src, dst_root=long_dst)
        app = sample_app(controller=controller)
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.pause()
            await pilot.pause()
            return static_text(app, "#title")

    title = asyncio.run(scenario()).rstrip()
    assert "…" in title and title.endswith("/destination-leaf"), title
    assert "/source-leaf → …" in title and len(title) <= 120, title


def test_errors_show_escaped_unicode_and_bracketed_paths_newest_first():
    text = shown("errors", "#errors-text")
    assert "bad\\xff.dat" in text
    assert "Ünïcødé/рабочие/日本語ファイル.txt" in text
    assert "[draft] notes.md" in text  # not swallowed as markup
    assert text.index(".~lock.budget") < text.index("hr/2019/salaries")  # newest first
    assert "Input/output error" in text


def test_errors_panel_title_counts_all_failures():
    async def scenario():
        app = sample_app("errors")
        async with app.run_test(size=(120, 36)):
            return app.screen_stack[0].query_one("#errors").border_title

    assert asyncio.run(scenario()) == "Errors · 23 failed"


def test_gate_reason_in_words():
    text = shown("gate", "#gate-text")
    assert "DST round 4 waits for SRC to finish round 5" in text
    assert "SRC round 5" in text and "may start its next round" in text
    assert "at most 2 rounds ahead" in text


def test_throughput_shows_humanized_rates_totals_and_eta():
    text = shown("copy", "#rates")
    assert "212 items/s · 486.2 MiB/s" in text
    assert "60,212 / 124,574 items · 5 failed" in text
    assert "182.4 GiB / 391.5 GiB" in text
    assert "7m 20s" in text


def test_level_caches_list_levels_and_totals():
    async def scenario():
        app = sample_app("running")
        async with app.run_test(size=(120, 36)):
            table = app.screen_stack[0].query_one("#levels-table")
            return [[str(cell) for cell in table.get_row_at(i)] for i in range(table.row_count)]

    rows = asyncio.run(scenario())
    assert rows[0] == ["SRC", "5", "1,840", "9", "616", "1,212", "3"]  # taken: 600 buffered + 16 in flight
    assert rows[2] == ["SRC", "total", "4,817", "2,986", "616", "1,212", "3"]
    assert rows[-1] == ["DST", "total", "2,854", "1,544", "288", "1,020", "2"]


def test_rounds_show_progress_and_load_per_side():
    async def scenario():
        app = sample_app("copy")
        async with app.run_test(size=(120, 36)):
            main = app.screen_stack[0]
            bar = main.query_one("#src-progress ProgressBar")
            return (
                bar.total, bar.progress,
                static_text(app, "#src-round"), static_text(app, "#src-mode"),
                static_text(app, "#src-queue"), static_text(app, "#dst-round"),
            )

    total, progress, src_round, mode, queue, dst_round = asyncio.run(scenario())
    assert (total, progress) == (5200, 3100)
    assert "SRC copy round 7 · running" in src_round  # not the gate's traversal round (11)
    assert "copy pass 2: files" in mode
    assert "1,800 buffered · 16 in flight" in queue
    assert "DST round 11 · completed" in dst_round


def test_panels_redraw_only_when_their_part_of_the_snapshot_changes():
    async def scenario():
        controller = FakeController("running")
        app = sample_app(controller=controller)
        draws = []
        async with app.run_test(size=(120, 36)) as pilot:
            panel = app.screen_stack[0].query_one("#levels")
            original = panel.draw
            panel.draw = lambda snapshot: (draws.append(snapshot.phase), original(snapshot))
            for _ in range(3):  # the same snapshot again and again
                app.refresh_view()
            controller.pause()  # a new snapshot, same level caches
            app.refresh_view()
            controller.retry()  # the level caches change
            app.refresh_view()
            await pilot.pause()
            return draws

    assert asyncio.run(scenario()) == ["retry"]


def test_errors_panel_lists_only_the_latest_fifty():
    from dataclasses import replace

    from engine.snapshot import ErrorView
    from tui.samples import error_state

    base = error_state()
    errors = tuple(
        ErrorView(base.taken_at - 100 + i, "src", "traversal", f"/data/file-{i:03d}", "EIO", 1)
        for i in range(60)
    )
    controller = FakeController("errors")
    controller.set_snapshot(replace(base, errors=errors))

    async def scenario():
        app = sample_app(controller=controller)
        async with app.run_test(size=(160, 50)):
            return static_text(app, "#errors-text")

    text = asyncio.run(scenario())
    assert "/data/file-059" in text and "/data/file-010" in text
    assert "/data/file-009" not in text


def test_one_column_when_narrow_two_when_wide():
    async def layout(size):
        app = sample_app("running")
        async with app.run_test(size=size) as pilot:
            await pilot.pause()  # breakpoint classes land with the first resize
            main = app.screen_stack[0]
            left, right = main.query_one("#left").region, main.query_one("#right").region
            return main.has_class("-wide"), left, right

    wide, left, right = asyncio.run(layout((80, 24)))
    assert not wide and left.x == right.x and right.y > left.y  # stacked
    wide, left, right = asyncio.run(layout((160, 50)))
    assert wide and right.x > left.x and right.y == left.y  # side by side


def test_a_rate_history_of_one_sample_draws_no_bars():
    async def scenario():
        app = sample_app("running")
        base = app.controller.snapshot()
        async with app.run_test(size=(160, 50)) as pilot:
            app.controller.set_snapshot(dataclasses.replace(base, history=base.history[-1:]))  # a run just begun
            app.refresh_view(force=True)
            await pilot.pause()
            main = app.screen_stack[0]
            return [main.query_one(f"#{name}-spark").render() for name in ("discovery", "copy")]

    for sparkline in asyncio.run(scenario()):
        drawn = "".join(segment.text for segment in Console(width=40).render(sparkline))
        assert "█" not in drawn  # a full bar read as the peak rate; 0 B/s in a dry run


def test_a_long_status_message_is_shown_whole_at_80_columns():
    long = ("migrate.toml not applied: settings file '/var/lib/migrate/migrate.toml' is not valid TOML: "
            "Illegal character '\\n' (at line 1, column 14)")

    async def scenario():
        app = sample_app("running")
        base = app.controller.snapshot()
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause()
            rows_short = app.query_one("#status").size.height
            app.controller.set_snapshot(dataclasses.replace(base, message=long))
            app.refresh_view(force=True)
            await pilot.pause()
            status = app.query_one("#status")
            return rows_short, status.size.height, "".join(
                segment.text for segment in Console(width=78).render(status.render()))

    rows_short, rows_long, drawn = asyncio.run(scenario())
    assert rows_short == 1
    assert rows_long in (2, 3) and "column 14)" in drawn  # its end is on the screen, not cut at the first row
