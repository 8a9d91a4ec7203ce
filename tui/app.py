"""The operator console: a Textual app that drives one migration and watches it.

The console polls ``controller.snapshot()`` twice a second and sends
commands to the controller from one background thread, in the order they were
given, so the event loop never waits on the engine.

The event loop shares the GIL with the engine's threads: every millisecond it
spends drawing is taken from the migration. So it draws only what changed (see
``tui.panels``), the panels at most about once a second, and everything at once
after a key or when the run changes phase or state.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import queue
import signal
import sys
import termios
import threading
import time
from time import monotonic
from dataclasses import dataclass
from typing import Callable

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Container, VerticalScroll
from textual.message import Message
from textual.widgets import Footer
from textual.worker import get_current_worker

from engine.controller import Controller
from engine.errors import UserError
from engine.snapshot import MigrationSnapshot
from engine.threads import ThreadLimit, is_thread_limit, start_thread
from tui.help import HelpScreen
from tui.panels import (
    Cell,
    ErrorsPanel,
    GatePanel,
    LevelsPanel,
    Panel,
    RoundsPanel,
    SummaryPanel,
    ThroughputPanel,
    TitleBar,
)

FINISHED_PHASES = ("done", "planned")
STOPPING_TEXT = "stopping: finishing in-flight tasks… (press q again to force)"
RESUME_HINT = "Interrupted run: press R to resume it from the DuckDB file"
PLAN_HINT = "Dry run done: press c to copy its plan as it stands"


@dataclass(frozen=True)
class ConsoleKey:
    key: str
    action: str
    label: str  # short, for the footer
    help: str  # one line, for the help screen
    display: str | None = None


KEYS = (
    ConsoleKey("p", "pause", "Pause", "pause: lease no new tasks; in-flight tasks finish"),
    ConsoleKey("r", "resume", "Resume", "resume after a pause"),
    ConsoleKey("t", "retry", "Retry", "retry mode: re-run failed and pending tasks, then copy (any run)"),
    ConsoleKey("R", "resume_db", "Resume run", "resume an interrupted run from its DuckDB file", "R"),
    ConsoleKey("c", "copy_plan", "Copy plan",
               "copy a finished dry run's plan as it stands (migrate run --use-plan)"),
    ConsoleKey("question_mark", "help", "Help", "show this help", "?"),
    ConsoleKey("q", "quit", "Quit", "quit: finish in-flight tasks, then exit (q again: force stop)"),
)


class CommandDone(Message):
    def __init__(self, label: str) -> None:
        super().__init__()
        self.label = label


class CommandFailed(Message):
    def __init__(self, label: str, error: BaseException) -> None:
        super().__init__()
        self.label = label
        self.error = error


class EngineStopped(Message):
    """The graceful stop finished: the engine's threads have ended."""


class StopSignalled(Message):
    """SIGTERM or SIGHUP arrived: quit as q does."""

    def __init__(self, signum: int) -> None:
        super().__init__()
        self.signum = signum


class RunEnded(Message):
    """The engine's threads have ended (the run finished, failed or stopped): redraw now, not at
    the next poll."""


# what ends the console as q does (a second one as q again): `kill`, a service manager, a closed terminal
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def leave_a_lost_terminal() -> None:
    """After a hangup the terminal's descriptors fail with EIO: point them at /dev/null, so that what is
    still drawn, and Textual's restoring of the terminal, go nowhere instead of killing its writer thread
    (whose full queue would then block the event loop for good)."""
    null = None
    for fd in (0, 1, 2):
        try:
            termios.tcgetattr(fd)
        except termios.error as exc:
            if exc.args[0] != errno.EIO:  # not a terminal (a pipe, a file): nothing lost there
                continue
            if null is None:
                null = os.open(os.devnull, os.O_RDWR)
            os.dup2(null, fd)
    if null is not None:
        os.close(null)


# the commands that start the engine: a refusal of one (the roots changed since) is how the console ends
TAKING_UP = ("start", "retry", "resume from the DuckDB file", "copy the plan")


class MigrationConsole(App[int]):
    CSS_PATH = "console.tcss"
    TITLE = "migrate-tui"
    ENABLE_COMMAND_PALETTE = False
    AUTO_FOCUS = None  # nothing highlighted at start; tab moves into the tables
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    BINDINGS = [
        Binding(k.key, k.action, k.label, key_display=k.display) for k in KEYS
    ]

    STALE_AFTER_S = 5.0
    # The panels are redrawn at most this often unless forced: a little under a second, so that
    # every other poll (every 0.5 s) redraws them even when the timer fires a little early.
    PANELS_EVERY_S = 0.9

    def __init__(
        self,
        controller: Controller,
        *,
        now: Callable[[], float] = time.time,
        start_run: bool | None = None,
        refresh_seconds: float = 0.5,
    ) -> None:
        """``start_run``: call ``controller.start()`` at mount; ``None`` starts
        only a run whose snapshot says phase "new"."""
        super().__init__()
        self.controller = controller
        self._now = now
        self._start_run = start_run
        self.drove_run = False  # this console started or resumed the run (its exit code says how it ended)
        self.refused: str | None = None  # why the last start, resume or retry was refused (the pair, say)
        self.thread_limited = False  # the console could not start a thread of its own (tui.cli says so)
        self._refresh_seconds = refresh_seconds
        self._commands: queue.Queue[tuple[str, Callable[[], None]]] = queue.Queue()
        self._force = threading.Event()
        self._quitting = False
        self._resume_requested = False
        self._copy_requested = False  # c was pressed and its copy has not shown in a snapshot yet
        self.engine_stopped = False
        self.force_stop_thread: threading.Thread | None = None
        self.force_stop_error: str | None = None
        self.snapshot: MigrationSnapshot | None = None
        self._panels_drawn_at = float("-inf")  # monotonic()
        self._gc_frozen = False  # see on_mount
        self._signal_loop: asyncio.AbstractEventLoop | None = None
        self._handlers_before: dict[int, object] = {}  # the signal handlers on_load replaced

    # -- layout -----------------------------------------------------------

    def _handle_exception(self, error: Exception) -> None:
        """Past the limit on threads, Textual's own (keys, the command worker) cannot start: tui.cli ends with
        one line for that instead of a traceback. Anything else: Textual's handling."""
        if not is_thread_limit(error):
            super()._handle_exception(error)
            return
        self.thread_limited = True
        self._return_code = ThreadLimit.exit_code
        self._close_messages_no_wait()

    def compose(self) -> ComposeResult:
        yield TitleBar(id="title")
        yield Cell(id="status")
        with VerticalScroll(id="body"):
            yield RoundsPanel(id="rounds")
            with Container(id="columns"):
                with VerticalScroll(id="left", classes="column"):
                    yield SummaryPanel(id="summary")  # first: once there is one, it matters most
                    yield GatePanel(id="gate")
                    yield ThroughputPanel(id="throughput")
                with VerticalScroll(id="right", classes="column"):
                    yield LevelsPanel(id="levels")
                    yield ErrorsPanel(id="errors")
        yield Footer()

    def on_load(self) -> None:
        # Before the driver takes the terminal over, so that from then on SIGTERM and SIGHUP end through
        # it, which gives the terminal back (the default action would leave it on the alternate screen).
        self._signal_loop = asyncio.get_running_loop()
        if threading.current_thread() is not threading.main_thread():
            return  # only the main thread may set handlers (an app run elsewhere keeps the defaults)
        for signum in STOP_SIGNALS:
            self._handlers_before[signum] = signal.signal(signum, self._on_stop_signal)

    def _on_stop_signal(self, signum: int, frame) -> None:
        """Runs in the main thread, between two bytecodes of whatever it was doing (the event loop
        included): hands the request over to the loop and does nothing else, but for a hangup. That
        goes first: a session leader's SIGHUP comes with SIGCONT, on which Textual takes the terminal
        over again, writing to it."""
        if signum == signal.SIGHUP:
            leave_a_lost_terminal()
        loop = self._signal_loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.post_message, StopSignalled(signum))

    async def on_stop_signalled(self, message: StopSignalled) -> None:
        self.notify(f"{signal.Signals(message.signum).name}: quitting as q does", severity="warning")
        await self.action_quit()

    def on_mount(self) -> None:
        # Held, not queried per refresh: queries go to the active screen, which
        # is the help screen while it is open.
        self._title = self.query_one(TitleBar)
        self._status = self.query_one("#status", Cell)
        self._status_kind: str | None = None
        self._panels = list(self.query(Panel))
        self.refresh_view()
        # Once the first screen is drawn, most of the app's objects (Textual's modules and
        # styles, the widget tree) live as long as it does: taken out of the garbage
        # collector's full collections, which otherwise scan them again and again holding the
        # GIL, while the engine's threads wait (in a 100k run: 0.6 -> 0.3 s of collections).
        self.call_after_refresh(self._freeze_gc)
        self.set_interval(self._refresh_seconds, self.refresh_view)
        self.run_worker(
            self._run_commands, thread=True, name="controller commands", exit_on_error=False
        )
        start = self._start_run
        if start is None:
            start = self.snapshot is not None and self.snapshot.phase == "new"
        if start:
            self.drove_run = True
            self._commands.put(("start", self.controller.start))

    def _freeze_gc(self) -> None:
        if not self._gc_frozen and not self._closing and gc.get_freeze_count() == 0:
            gc.freeze()
            self._gc_frozen = True

    def on_unmount(self) -> None:
        # The driver has given the terminal back by now: the signals' defaults again
        for signum, handler in self._handlers_before.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: set outside Python
        self._handlers_before.clear()
        if self._gc_frozen:
            self._gc_frozen = False
            gc.unfreeze()  # what became garbage meanwhile may be collected again

    # -- polling ------------------------------------------------------------

    def refresh_view(self, force: bool = False) -> None:
        """Poll the engine and redraw what changed: the title and the status line at every
        poll, the panels (whose counts and rates change at every poll while the run goes on)
        about once a second. ``force`` (after a command), or a new phase or state of the run,
        redraws the panels at once."""
        try:
            snapshot = self.controller.snapshot()
        except Exception as exc:  # the engine's problem, shown rather than crashing the console
            self._set_status(f"engine snapshot failed: {exc}", "-error")
            return
        previous, self.snapshot = self.snapshot, snapshot
        if snapshot.phase != "interrupted":
            self._resume_requested = False  # the resume took (or the run moved on)
        if snapshot.phase != "planned":
            self._copy_requested = False  # the copy took
        self._title.show(snapshot)
        now = monotonic()
        if (force or previous is None or now - self._panels_drawn_at >= self.PANELS_EVERY_S
                or (previous.phase, previous.state) != (snapshot.phase, snapshot.state)):
            self._panels_drawn_at = now
            for panel in self._panels:
                panel.show(snapshot)
        self._show_status(snapshot)

    def _show_status(self, snapshot: MigrationSnapshot) -> None:
        stale_s = self._now() - snapshot.taken_at
        if self._quitting:
            self._set_status(STOPPING_TEXT, "-stopping")
        elif snapshot.phase == "interrupted" and self.refused is None and snapshot.stop_reason:  # why first
            self._set_status(f"stopped, press R to resume once fixed: {snapshot.stop_reason}", "-hint")
        elif snapshot.phase == "interrupted" and self.refused is None:  # once refused, why (below), not R again
            self._set_status(RESUME_HINT, "-hint")
        elif snapshot.phase == "planned" and snapshot.state != "running" and self.refused is None:
            # the next step, after what the run said last (the dry run's end, a note)
            self._set_status(f"{snapshot.message} · {PLAN_HINT}" if snapshot.message else PLAN_HINT, "-hint")
        elif snapshot.state == "running" and stale_s > self.STALE_AFTER_S:
            self._set_status(f"no news from the engine for {int(stale_s)}s", "-error")
        else:
            self._set_status(snapshot.message or "", "")

    def _set_status(self, text: str, kind: str) -> None:
        self._status.show_text(Text(text))  # Text: engine messages may contain [brackets]
        if kind != self._status_kind:
            self._status_kind = kind
            self._status.set_classes(kind)

    # -- commands -------------------------------------------------------------

    def _run_commands(self) -> None:
        """Thread worker: run controller commands one at a time, in order. Between commands,
        tell the event loop when the engine's threads end."""
        worker = get_current_worker()
        engine_ran = False
        while not worker.is_cancelled:
            try:
                label, command = self._commands.get(timeout=0.1)
            except queue.Empty:
                ended = self.controller.wait(timeout=0)
                if ended and engine_ran:
                    self._post(RunEnded())
                engine_ran = not ended
                continue
            try:
                command()
            except Exception as exc:  # shown to the operator, never a traceback
                self._post(CommandFailed(label, exc))
            else:
                self._post(CommandDone(label))

    def _post(self, message: Message) -> None:
        try:
            self.post_message(message)
        except RuntimeError:  # the loop closed while we were working: nobody to tell
            pass

    def _send(self, label: str, command: Callable[[], None], *, any_phase: bool = False) -> None:
        """Queue a run command unless the run's state makes it meaningless.
        ``any_phase``: the command also makes sense on a finished or interrupted run."""
        snapshot = self.snapshot
        if self._quitting:
            self.notify(f"stopping: {label} ignored", severity="warning")
        elif any_phase:
            self._commands.put((label, command))
        elif snapshot is not None and snapshot.phase in FINISHED_PHASES:
            self.notify(f"the run is {snapshot.phase}: nothing to {label}", severity="warning")
        elif snapshot is not None and snapshot.phase == "interrupted":
            self.notify("this run is interrupted: press R to resume it first", severity="warning")
        else:
            self._commands.put((label, command))

    def on_command_done(self, message: CommandDone) -> None:
        if message.label in TAKING_UP:
            self.refused = None
        self.refresh_view(force=True)

    def on_run_ended(self, message: RunEnded) -> None:
        self.refresh_view()

    def on_command_failed(self, message: CommandFailed) -> None:
        if message.label == "resume from the DuckDB file":
            self._resume_requested = False
        if message.label == "copy the plan":
            self._copy_requested = False
        if message.label in TAKING_UP and isinstance(message.error, UserError) \
                and not isinstance(message.error, ThreadLimit):  # refused for good, not for want of a thread
            self.refused = str(message.error)
        self.notify(f"{message.label} failed: {message.error}", severity="error", timeout=10)
        self.refresh_view(force=True)

    def action_pause(self) -> None:
        self._send("pause", self.controller.pause)

    def action_resume(self) -> None:
        self._send("resume", self.controller.resume)

    def action_retry(self) -> None:
        # Retrying failures is also how a finished or interrupted run is taken up again: the exit code then
        # says how the retry ended (1 with failures left, 130 quit before the end), as `migrate retry`'s does.
        if not self._quitting:
            self.drove_run = True
        self._send("retry", self.controller.retry, any_phase=True)

    def action_resume_db(self) -> None:
        snapshot = self.snapshot
        if self._quitting:
            self.notify("stopping: resume ignored", severity="warning")
        elif snapshot is None or snapshot.phase != "interrupted":
            phase = snapshot.phase if snapshot else "unknown"
            self.notify(
                f"R resumes an interrupted run; this run's phase is {phase!r}",
                severity="warning",
            )
        elif self._resume_requested:
            self.notify("already resuming from the DuckDB file")
        else:
            self._resume_requested = self.drove_run = True
            self._commands.put(("resume from the DuckDB file", self.controller.resume_from_db))

    def action_copy_plan(self) -> None:
        snapshot = self.snapshot
        if snapshot is not None and snapshot.phase != "planned":
            self.notify(f"c copies a finished dry run's plan; this run's phase is {snapshot.phase!r}",
                        severity="warning")
        elif self._copy_requested:  # asked already, and the snapshot has not caught up yet
            self.notify("already copying the plan")
        else:
            if not self._quitting:
                self._copy_requested = self.drove_run = True  # its exit code says how the copy ended
            self._send("copy the plan", self.controller.copy_plan, any_phase=True)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen((k.display or k.key, k.help) for k in KEYS))

    # -- quitting -------------------------------------------------------------

    async def action_quit(self) -> None:
        """First q: graceful stop, exit when the engine is done. Second q: force."""
        if not self._quitting:
            self._quitting = True
            self._set_status(STOPPING_TEXT, "-stopping")
            self._commands.put(("stop", self._stop_gracefully))
            return
        self._force.set()
        # A plain, non-daemon thread: it must run even though the app exits now,
        # and the process waits for it so the DuckDB file is left resumable.
        try:
            self.force_stop_thread = start_thread(threading.Thread(target=self._stop_forced,
                                                                   name="migrate-tui force stop"))
        except ThreadLimit:  # no thread left for it: stop here, the screen waits that long
            self._stop_forced()
        self.exit(0)

    def _stop_gracefully(self) -> None:
        self.controller.stop()
        worker = get_current_worker()  # cancelled when the app exits some other way
        while not (self._force.is_set() or worker.is_cancelled):
            if self.controller.wait(timeout=0.25):
                self.engine_stopped = True
                self._post(EngineStopped())
                return

    def _stop_forced(self) -> None:
        try:
            self.controller.stop(force=True)
            self.engine_stopped = True
        except Exception as exc:  # the screen is going away: main() prints it afterwards
            self.force_stop_error = str(exc)

    def on_engine_stopped(self, message: EngineStopped) -> None:
        self.exit(0)


def main(argv: list[str] | None = None) -> int:
    """Console script ``migrate-tui``."""
    from tui.cli import run

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
