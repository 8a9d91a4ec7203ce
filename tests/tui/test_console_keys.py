"""Keys drive the controller: each one calls the right method, or explains why not."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from console_testing import static_text, wait_until

from tui.app import KEYS, RESUME_HINT, STOPPING_TEXT, MigrationConsole
from tui.help import HelpScreen
from tui.samples import FakeController, running, sample_app

SIZE = (120, 36)


def run(coro):
    return asyncio.run(coro)


@pytest.mark.parametrize(
    ("key", "call", "shown_state"),
    [("p", "pause", "paused"), ("r", "resume", "running"), ("t", "retry", "running")],
)
def test_run_keys_call_the_controller_and_the_screen_follows(key, call, shown_state):
    async def scenario():
        controller = FakeController("running")
        app = sample_app(controller=controller)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press(key)
            await wait_until(pilot, lambda: controller.calls == [call])
            await pilot.pause()
            assert app.snapshot == controller.snapshot()
            assert shown_state in static_text(app, "#title")

    run(scenario())


def test_retry_key_shows_retry_mode():
    async def scenario():
        controller = FakeController("running")
        app = sample_app(controller=controller)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("t")
            await wait_until(pilot, lambda: app.snapshot.phase == "retry")
            assert "retry" in static_text(app, "#src-mode")

    run(scenario())


def test_commands_run_in_the_order_pressed():
    async def scenario():
        controller = FakeController("running")
        app = sample_app(controller=controller)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("p", "r", "p", "t")
            await wait_until(pilot, lambda: len(controller.calls) == 4)
            assert controller.calls == ["pause", "resume", "pause", "retry"]

    run(scenario())


def test_resume_from_db_on_an_interrupted_run(notes):
    async def scenario():
        controller = FakeController("interrupted")
        app = sample_app(controller=controller)
        async with app.run_test(size=SIZE) as pilot:
            assert static_text(app, "#status").strip() == RESUME_HINT
            await pilot.press("R")
            await wait_until(pilot, lambda: controller.calls == ["resume_from_db"])
            await wait_until(pilot, lambda: app.snapshot.phase == "traversal")
            assert RESUME_HINT not in static_text(app, "#status")

    run(scenario())


@pytest.mark.parametrize("sample", ["running", "paused", "finished"])
def test_resume_from_db_refused_unless_interrupted(sample, notes):
    async def scenario():
        controller = FakeController(sample)
        app = sample_app(controller=controller)
        async with app.run_test(size=SIZE) as pilot:
            seen = notes(app)
            await pilot.press("R")
            await pilot.pause(0.2)
            assert controller.calls == []
            assert len(seen) == 1 and "interrupted" in seen[0]
            assert repr(controller.snapshot().phase) in seen[0]

    run(scenario())


@pytest.mark.parametrize(("sample", "why"), [("finished", "done"), ("interrupted", "press R")])
def test_pause_and_resume_refused_on_finished_or_interrupted_runs(sample, why, notes):
    async def scenario():
        controller = FakeController(sample)
        app = sample_app(controller=controller)
        async with app.run_test(size=SIZE) as pilot:
            seen = notes(app)
            await pilot.press("p", "r")
            await pilot.pause(0.2)
            assert controller.calls == []
            assert len(seen) == 2 and all(why in note for note in seen)

    run(scenario())


@pytest.mark.parametrize("sample", ["finished", "interrupted"])
def test_retry_takes_up_a_finished_or_interrupted_run(sample):
    async def scenario():
        controller = FakeController(sample)
        app = sample_app(controller=controller)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("t")
            await wait_until(pilot, lambda: controller.calls == ["retry"])

    run(scenario())


def test_opening_a_finished_run_starts_nothing_and_shows_the_summary():
    async def scenario():
        controller = FakeController("finished")
        app = MigrationConsole(controller, now=lambda: controller.snapshot().taken_at)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(0.3)
            assert controller.calls == []
            assert app.screen_stack[0].query_one("#summary").display
            assert "124,564" in static_text(app, "#summary-text")

    run(scenario())


def test_a_new_run_is_started_from_a_worker():
    async def scenario():
        controller = FakeController("running")
        controller.set_snapshot(replace(running(), phase="new", state="stopped"))
        app = MigrationConsole(controller, now=lambda: controller.snapshot().taken_at)
        async with app.run_test(size=SIZE) as pilot:
            await wait_until(pilot, lambda: controller.calls == ["start"])
            await wait_until(pilot, lambda: app.snapshot.phase == "traversal")

    run(scenario())


def test_start_run_false_never_starts():
    async def scenario():
        controller = FakeController("running")
        controller.set_snapshot(replace(running(), phase="new", state="stopped"))
        app = MigrationConsole(controller, start_run=False)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause(0.3)
            assert controller.calls == []

    run(scenario())


def test_help_opens_lists_every_key_and_closes():
    async def scenario():
        app = sample_app("running")
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("question_mark")
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)
            shown = static_text(app, "#help-keys", screen=app.screen)
            for key in KEYS:
                assert f" {key.display or key.key} " in f" {shown} ".replace("\n", " ")
            bound = {binding.key for binding in app.BINDINGS}
            assert bound == {key.key for key in KEYS}
            await pilot.press("escape")
            await pilot.pause()
            assert not isinstance(app.screen, HelpScreen)
            await pilot.press("question_mark", "q")  # q closes the help, as in less; the console stays
            await pilot.pause()
            assert not isinstance(app.screen, HelpScreen) and app.is_running

    run(scenario())


def test_screen_keeps_refreshing_under_the_help_screen():
    async def scenario():
        controller = FakeController("running")
        app = sample_app(controller=controller)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("question_mark")
            controller.pause()  # the engine changes while help is open
            await wait_until(pilot, lambda: "paused" in static_text(app, "#title"))
            assert isinstance(app.screen, HelpScreen)

    run(scenario())


def test_quit_stops_gracefully_and_exits_when_the_engine_is_done(notes):
    async def scenario():
        controller = FakeController("running", hold_stop=True)
        app = sample_app(controller=controller)
        async with app.run_test(size=SIZE) as pilot:
            seen = notes(app)
            await pilot.press("q")
            await wait_until(pilot, lambda: controller.calls == ["stop"])
            await pilot.pause(0.3)
            assert app.return_code is None  # still finishing in-flight tasks
            assert "stopping: finishing in-flight tasks" in static_text(app, "#status")
            await pilot.press("p")  # ignored while stopping
            await pilot.pause(0.1)
            assert controller.calls == ["stop"] and "ignored" in seen[-1]
            controller.finish_stopping()
            await wait_until(pilot, lambda: app.return_code == 0)
        assert app.engine_stopped
        assert controller.calls == ["stop"]

    run(scenario())


def test_second_quit_forces_and_exits_at_once():
    async def scenario():
        controller = FakeController("running", hold_stop=True)
        app = sample_app(controller=controller)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("q")
            await wait_until(pilot, lambda: controller.calls == ["stop"])
            await pilot.press("q")
            await wait_until(pilot, lambda: app.return_code == 0, timeout=3.0)  # held stop never ends
        app.force_stop_thread.join(timeout=5)
        assert controller.calls == ["stop", "stop(force=True)"]
        assert app.engine_stopped

    run(scenario())


def test_stopping_text_is_the_one_the_brief_asks_for():
    assert STOPPING_TEXT.startswith("stopping: finishing in-flight tasks…")


class FailingController(FakeController):
    def pause(self) -> None:
        raise RuntimeError("queue is sealed")

    def snapshot(self):
        if getattr(self, "broken", False):
            raise RuntimeError("database is locked")
        return super().snapshot()


def test_a_failing_command_is_notified_not_raised(notes):
    async def scenario():
        controller = FailingController("running")
        app = sample_app(controller=controller)
        async with app.run_test(size=SIZE) as pilot:
            seen = notes(app)
            await pilot.press("p")
            await wait_until(pilot, lambda: seen)
            assert seen == ["pause failed: queue is sealed"]
            await pilot.press("r")  # the command thread survived the failure
            await wait_until(pilot, lambda: controller.calls == ["resume"])

    run(scenario())


def test_a_failing_snapshot_shows_in_the_status_line():
    async def scenario():
        controller = FailingController("running")
        app = sample_app(controller=controller)
        async with app.run_test(size=SIZE) as pilot:
            controller.broken = True
            await wait_until(pilot, lambda: "database is locked" in static_text(app, "#status"))
            controller.broken = False
            await wait_until(pilot, lambda: "traversal: SRC round 5" in static_text(app, "#status"))

    run(scenario())


def test_a_silent_engine_is_flagged_by_the_clock():
    async def scenario():
        controller = FakeController("running")
        taken_at = controller.snapshot().taken_at
        clock = [taken_at + 1]
        app = sample_app(controller=controller, now=lambda: clock[0])
        async with app.run_test(size=SIZE) as pilot:
            assert "no news" not in static_text(app, "#status")
            clock[0] = taken_at + 42
            await wait_until(pilot, lambda: "no news from the engine for 42s" in static_text(app, "#status"))

    run(scenario())
