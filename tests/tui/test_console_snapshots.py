"""Screens of the console, compared with accepted SVGs in __snapshots__/.

Update after an intended change: pytest tests/tui --snapshot-update (then look at them).
Every screen comes from a fixed sample with the clock frozen at the sample's time.
"""

from __future__ import annotations

import pytest
from console_testing import wait_until

from tui.samples import FakeController, sample_app

WIDE = (120, 36)


@pytest.mark.parametrize(
    "sample", ["running", "paused", "gate", "copy", "retry", "finished", "planned", "interrupted", "errors"]
)
def test_screen(sample, snap_compare):
    assert snap_compare(sample_app(sample), terminal_size=WIDE)


def test_help_screen(snap_compare):
    assert snap_compare(sample_app("running"), press=["question_mark"], terminal_size=WIDE)


def test_small_terminal_80x24(snap_compare):
    assert snap_compare(sample_app("running"), terminal_size=(80, 24))


def test_large_terminal_160x50(snap_compare):
    assert snap_compare(sample_app("errors"), terminal_size=(160, 50))


def test_stopping(snap_compare):
    controller = FakeController("running", hold_stop=True)
    app = sample_app(controller=controller)

    async def quit_and_settle(pilot):
        # The stop runs in a thread: wait for it, then refresh, so the shot is stable.
        await pilot.press("q")
        await wait_until(pilot, lambda: controller.calls == ["stop"])
        app.refresh_view()

    assert snap_compare(app, run_before=quit_and_settle, terminal_size=WIDE)
