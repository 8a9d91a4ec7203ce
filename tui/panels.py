"""The console's panels. Each one renders a part of a MigrationSnapshot in place.

Every panel has ``show(snapshot)``, called a few times a second. Panels compare
what they would draw with what they drew last and skip unchanged updates, so a
quiet run costs almost nothing per refresh.
"""

from __future__ import annotations

from typing import Hashable

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import DataTable, Label, ProgressBar, Sparkline, Static

from engine.snapshot import MigrationSnapshot, QueueView
from tui import format as fmt

STATE_STYLES = {
    "running": "bold green",
    "paused": "bold yellow",
    "waiting": "bold magenta",
    "stopping": "bold red",
    "stopped": "red",
    "completed": "bold blue",
    "finished": "bold blue",
    "idle": "dim",
}

COPY_PASSES = {1: "copy pass 1: folders", 2: "copy pass 2: files"}


def state_text(state: str) -> Text:
    label = "waiting on gate" if state == "waiting" else state
    return Text(label, style=STATE_STYLES.get(state, ""))


class Panel(Vertical):
    """A bordered box whose title names it; skips redraws when nothing changed."""

    TITLE = ""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.add_class("panel")
        self.border_title = self.TITLE
        self._drawn: Hashable = object()

    def show(self, snapshot: MigrationSnapshot) -> None:
        key = self.key(snapshot)
        if key == self._drawn:
            return
        self._drawn = key
        self.draw(snapshot)

    def key(self, snapshot: MigrationSnapshot) -> Hashable:
        """What this panel depends on; equal keys mean an identical drawing."""
        return snapshot

    def draw(self, snapshot: MigrationSnapshot) -> None:
        raise NotImplementedError


class TitleBar(Static):
    """One line: where from, where to, and how the run is doing."""

    def show(self, snapshot: MigrationSnapshot) -> None:
        # Phase, state and time first: the paths are what a narrow screen may cut.
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(" migrate-tui ", style="bold reverse")
        text.append(" ")
        text.append(snapshot.phase, style="bold cyan")
        text.append(" · ")
        text.append_text(state_text(snapshot.state))
        text.append(f" · {fmt.duration(snapshot.elapsed_s)}  ")
        if snapshot.dry_run:
            text.append("DRY RUN", style="bold black on yellow")
            text.append("  ")
        text.append(fmt.display_path(snapshot.src_root), style="bold")
        text.append(" → ")
        text.append(fmt.display_path(snapshot.dst_root), style="bold")
        self.update(text)


class RoundsPanel(Panel):
    """SRC and DST side by side: a label column, then one column per queue."""

    TITLE = "Rounds"
    ROWS = ("round", "mode", "progress", "queue", "workers", "found", "rate", "waits")

    def compose(self) -> ComposeResult:
        with Grid(classes="rounds-grid"):
            for row in self.ROWS:
                yield Label("" if row == "round" else row, classes=f"row-label row-{row}")
                for side in ("src", "dst"):
                    if row == "progress":
                        with Horizontal(classes=f"row-{row}", id=f"{side}-progress"):
                            yield ProgressBar(total=1, show_eta=False)
                            yield Static(classes="round-count")
                    else:
                        yield Static(classes=f"row-{row}", id=f"{side}-{row}")

    def key(self, snapshot: MigrationSnapshot) -> Hashable:
        return snapshot.src, snapshot.dst

    def draw(self, snapshot: MigrationSnapshot) -> None:
        for queue in (snapshot.src, snapshot.dst):
            self._draw_queue(queue)
        waits = any(q.wait_reason for q in (snapshot.src, snapshot.dst))
        for cell in self.query(".row-waits"):
            cell.display = waits

    def _cell(self, queue: QueueView, row: str, content: Text) -> None:
        self.query_one(f"#{queue.side}-{row}", Static).update(content)

    def _draw_queue(self, queue: QueueView) -> None:
        heading = Text(f"{queue.side.upper()} round {queue.round} · ", style="bold")
        heading.append_text(state_text(queue.state))
        self._cell(queue, "round", heading)
        mode = COPY_PASSES.get(queue.copy_pass) if queue.mode == "copy" else None
        self._cell(queue, "mode", Text(mode or queue.mode))

        # No expected tasks yet: an empty bar, or a full one for a finished side.
        # Never total=None: that animates and makes screens non-deterministic.
        if queue.round_expected > 0:
            total, done = queue.round_expected, min(queue.round_completed, queue.round_expected)
        else:
            total, done = 1, 1 if queue.state == "completed" else 0
        progress = self.query_one(f"#{queue.side}-progress")
        progress.query_one(ProgressBar).update(total=total, progress=done)
        progress.query_one(".round-count", Static).update(
            Text(f"{fmt.count(queue.round_completed)}/{fmt.count(queue.round_expected)}")
        )

        self._cell(queue, "queue", Text(
            f"{fmt.count(queue.buffered)} buffered · {fmt.count(queue.in_flight)} in flight"
        ))
        workers = Text(str(queue.workers))
        if queue.failed_total:
            workers.append(f" · {fmt.count(queue.failed_total)} failed", style="red")
        self._cell(queue, "workers", workers)
        self._cell(queue, "found", Text(
            f"{fmt.count(queue.files_discovered)} files · "
            f"{fmt.count(queue.folders_discovered)} folders"
        ))
        self._cell(queue, "rate", Text(f"{fmt.rate(queue.discovery_rate)} entries/s"))
        self._cell(queue, "waits", Text(fmt.display_path(queue.wait_reason or ""), style="magenta"))


class GatePanel(Panel):
    TITLE = "Coordinator gate"

    def compose(self) -> ComposeResult:
        yield Static(id="gate-text")

    def key(self, snapshot: MigrationSnapshot) -> Hashable:
        return snapshot.gate, snapshot.settings

    def draw(self, snapshot: MigrationSnapshot) -> None:
        gate = snapshot.gate
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True, style="bold")
        grid.add_column()
        grid.add_row(
            Text("ahead", style="dim"),
            Text(f"SRC may run at most {gate.max_src_ahead} rounds ahead of DST", style="dim"),
        )
        sides = (
            ("SRC", gate.src_round, gate.src_done, gate.src_may_start, gate.src_reason),
            ("DST", gate.dst_round, gate.dst_done, gate.dst_may_start, gate.dst_reason),
        )
        for name, round_, done, may_start, reason in sides:
            if done:
                verdict = Text("✓ traversal done", style="blue")
            elif may_start:
                verdict = Text("✓ may start its next round", style="green")
            else:
                verdict = Text("✗ " + fmt.display_path(reason or "may not start its next round"),
                               style="magenta")
            grid.add_row(f"{name} round {round_}", verdict)
        if snapshot.settings:
            settings = " · ".join(f"{name}={value}" for name, value in snapshot.settings)
            grid.add_row(Text("settings", style="dim"), Text(settings, style="dim"))
        self.query_one("#gate-text", Static).update(grid)


class ThroughputPanel(Panel):
    TITLE = "Throughput"

    def compose(self) -> ComposeResult:
        yield Static(id="rates")
        yield ProgressBar(total=1, show_eta=False, id="copy-progress")
        with Horizontal(classes="spark-row"):
            yield Label("discovery", classes="spark-label")
            yield Sparkline([], id="discovery-spark")
        with Horizontal(classes="spark-row"):
            yield Label("copy B/s", classes="spark-label")
            yield Sparkline([], id="copy-spark")

    def key(self, snapshot: MigrationSnapshot) -> Hashable:
        rates = snapshot.src.discovery_rate, snapshot.dst.discovery_rate
        return rates, snapshot.copy, snapshot.history

    def draw(self, snapshot: MigrationSnapshot) -> None:
        src, dst, copy = snapshot.src, snapshot.dst, snapshot.copy
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=9, style="bold")
        grid.add_column()
        grid.add_row(
            "discovery",
            f"SRC {fmt.rate(src.discovery_rate)}/s · DST {fmt.rate(dst.discovery_rate)}/s",
        )
        grid.add_row(
            "copy", f"{fmt.rate(copy.items_per_s)} items/s · {fmt.bytes_per_second(copy.bytes_per_s)}"
        )
        items = fmt.count(copy.items_done)
        if copy.items_total:
            items += f" / {fmt.count(copy.items_total)}"
        volume = fmt.size(copy.bytes_done)
        if copy.bytes_total:
            volume += f" / {fmt.size(copy.bytes_total)}"
        grid.add_row("copied", f"{items} items · {volume}")
        outcome = Text(f"{fmt.count(copy.folders_created)} folders created · "
                       f"{fmt.count(copy.skipped)} newer on DST")
        if copy.failed:
            outcome.append(f" · {fmt.count(copy.failed)} failed", style="red")
        grid.add_row("", outcome)
        grid.add_row("ETA", fmt.duration(copy.eta_s))
        self.query_one("#rates", Static).update(grid)

        bar = self.query_one("#copy-progress", ProgressBar)
        bar.display = copy.items_total > 0
        if copy.items_total:
            bar.update(total=copy.items_total, progress=min(copy.items_done, copy.items_total))

        history = snapshot.history
        self.query_one("#discovery-spark", Sparkline).data = [p.discovery_rate for p in history]
        self.query_one("#copy-spark", Sparkline).data = [p.bytes_per_s for p in history]


class LevelsPanel(Panel):
    TITLE = "Level caches"
    COLUMNS = ("queue", "depth", "nodes", "pending", "running", "done", "failed")

    def compose(self) -> ComposeResult:
        table = DataTable(cursor_type="none", zebra_stripes=True, id="levels-table")
        table.add_columns(*self.COLUMNS)
        yield table

    def key(self, snapshot: MigrationSnapshot) -> Hashable:
        return snapshot.src.levels, snapshot.dst.levels

    def draw(self, snapshot: MigrationSnapshot) -> None:
        table = self.query_one(DataTable)
        table.clear()
        for queue in (snapshot.src, snapshot.dst):
            side = queue.side.upper()
            for level in queue.levels:
                table.add_row(*self._row(
                    side, level.depth, level.nodes, level.pending,
                    level.in_progress, level.successful, level.failed,
                ))
            totals = [sum(getattr(level, name) for level in queue.levels)
                      for name in ("nodes", "pending", "in_progress", "successful", "failed")]
            table.add_row(*self._row(side, "total", *totals, style="bold"))

    @staticmethod
    def _row(side: str, depth: int | str, *numbers: int, style: str = "") -> list[Text]:
        cells = [Text(side, style=style), Text(str(depth), style=style, justify="right")]
        cells += [Text(fmt.count(n), style=style, justify="right") for n in numbers]
        return cells


class ErrorsPanel(Panel):
    """Latest failures, newest first. A Rich table: long paths fold instead of
    pushing the reason off screen."""

    TITLE = "Errors"
    SHOWN = 50  # more would not fit a screen; the run file keeps them all

    def compose(self) -> ComposeResult:
        yield Static(id="errors-text")

    def key(self, snapshot: MigrationSnapshot) -> Hashable:
        # Ages count whole seconds from the snapshot's time: redraw at most once a second.
        ages_at = int(snapshot.taken_at) if snapshot.errors else None
        return snapshot.errors[-self.SHOWN:], snapshot.failed_count, ages_at

    def draw(self, snapshot: MigrationSnapshot) -> None:
        self.border_title = f"Errors · {fmt.count(snapshot.failed_count)} failed"
        body = self.query_one("#errors-text", Static)
        if not snapshot.errors:
            style = "green" if not snapshot.failed_count else "dim"
            body.update(Text("no failures" if not snapshot.failed_count
                             else "no recent failure listed", style=style))
            return
        table = Table(box=None, expand=True, padding=(0, 1), header_style="bold", pad_edge=False)
        table.add_column("age", justify="right", no_wrap=True)
        table.add_column("side", no_wrap=True)
        table.add_column("phase", no_wrap=True)
        table.add_column("tries", justify="right", no_wrap=True)
        # The reason goes under its path, so the path gets the whole width.
        table.add_column("path / reason", overflow="fold", ratio=1)
        for error in reversed(snapshot.errors[-self.SHOWN:]):
            where = Text(fmt.display_path(error.path))
            where.append("\n")
            where.append(fmt.display_path(error.message), style="red")
            table.add_row(
                fmt.age(snapshot.taken_at - error.time),
                Text(error.side.upper()),
                Text(error.phase),
                str(error.attempts),
                where,
            )
        body.update(table)


class SummaryPanel(Panel):
    """The final tally; only shown once the run has one."""

    TITLE = "Summary"

    def compose(self) -> ComposeResult:
        yield Static(id="summary-text")

    def key(self, snapshot: MigrationSnapshot) -> Hashable:
        return snapshot.summary

    def draw(self, snapshot: MigrationSnapshot) -> None:
        summary = snapshot.summary
        self.display = summary is not None
        if summary is None:
            return
        rows = [
            ("SRC files", fmt.count(summary.src_files), "to copy", fmt.count(summary.to_copy)),
            ("SRC folders", fmt.count(summary.src_folders), "copied", fmt.count(summary.copied)),
            ("DST entries", fmt.count(summary.dst_entries), "bytes", fmt.size(summary.bytes_copied)),
            ("identical", fmt.count(summary.identical), "failed", fmt.count(summary.failed)),
            ("DST newer", fmt.count(summary.dst_newer), "elapsed", fmt.duration(summary.elapsed_s)),
            ("not on SRC", fmt.count(summary.not_on_src), "", ""),
        ]
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim")
        grid.add_column(justify="right", style="bold")
        grid.add_column(style="dim")
        grid.add_column(justify="right", style="bold")
        for row in rows:
            grid.add_row(*row)
        self.query_one("#summary-text", Static).update(grid)
