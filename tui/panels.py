"""The console's panels. Each one renders a part of a MigrationSnapshot in place.

Every panel has ``show(snapshot)``, called a few times a second. Panels compare
what they would draw with what they drew last and skip unchanged updates, so a
quiet run costs almost nothing per refresh.

While the engine runs, every millisecond the console spends drawing is taken
from the engine's threads (one GIL), so a busy refresh must stay cheap too:
within a panel only the cells whose text changed are updated (``Cell``), and a
new layout of the screen (which places every widget again) is asked for only
when a cell's size may have changed. (The app also redraws the panels less
often than it polls: see ``MigrationConsole.refresh_view``.)
"""

from __future__ import annotations

from typing import Hashable

from rich.cells import cell_len
from rich.console import RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import DataTable, Label, ProgressBar, Sparkline, Static

from engine.snapshot import CopyView, MigrationSnapshot, QueueView, RatePoint
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


FIXED = ("fixed",)  # a cell whose size its content never changes
HIDDEN = ("hidden",)


def text_key(text: Text) -> Hashable:
    """Everything a Text draws with (``Text.__eq__`` ignores the base style and justification)."""
    return text.plain, str(text.style), tuple(text.spans), text.justify, text.overflow, text.no_wrap


class Cell(Static):
    """A Static whose content changes often (a count, a rate, a state).

    ``show_text`` (and ``show_content``) redraws only when the content changed, and asks
    for a new layout only when the cell's size may change with it: a cell of fixed size,
    or a single line that still fits the same width, is repainted in place."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._shown_key: Hashable = object()
        self._extent: Hashable | None = None

    def show_content(self, content: RenderableType, key: Hashable, extent: Hashable | None = None) -> None:
        """Draw ``content`` unless ``key`` is what is drawn already. ``extent``: what the drawn size
        depends on, None when unknown; equal extents before and after mean the size did not change."""
        if key == self._shown_key:
            return
        self._shown_key = key
        same_size = extent is not None and extent == self._extent
        self._extent = extent
        self.update(content, layout=not same_size)

    def show_text(self, text: Text) -> None:
        self.show_content(text, text_key(text), self.text_extent(text.plain))

    def text_extent(self, plain: str) -> Hashable | None:
        """The size a text will take here when it can be told without rendering it: a hidden or
        fixed-size cell, a single line that fits the cell's width, or an auto-width line of so
        many cells."""
        if not self.display:  # no size now; showing it again lays the screen out anyway
            return HIDDEN
        styles = self.styles
        width, height = styles.width, styles.height
        width_auto = width is not None and width.is_auto
        if height is not None and height.is_cells and not width_auto:
            return FIXED
        size = self.size
        if not size.width or "\n" in plain:
            return None
        cells = cell_len(plain)
        if width_auto:  # as wide as the text, unless the container is narrower
            return ("auto", cells) if cells == size.width else None
        # With the width: after a resize the drawn text may have wrapped.
        return ("one line", size.width) if cells <= size.width else None


def grid_extent(cell: Cell, rows: list[tuple[str, str | Text]], label_width: int, gap: int) -> Hashable | None:
    """The extent of a two-column grid of labels and values (``Table.grid``) drawn in ``cell``:
    one line a row while every value fits beside the labels, else unknown."""
    width = cell.size.width
    room = width - label_width - gap
    for _, value in rows:
        plain = str(value)
        if room <= 0 or "\n" in plain or cell_len(plain) > room:
            return None
    return "rows", len(rows), width


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


class TitleBar(Cell):
    """One line: where from, where to, and how the run is doing."""

    _snapshot: MigrationSnapshot | None = None

    def on_resize(self, event) -> None:
        if self._snapshot is not None:  # the paths are cut to the width: cut them again
            self.show(self._snapshot)

    def show(self, snapshot: MigrationSnapshot) -> None:
        self._snapshot = snapshot
        # Phase, state and time first: the paths are what a narrow screen may cut.
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append(" migrate-tui ", style="bold reverse")
        text.append(" ")
        text.append(snapshot.phase, style="bold cyan")
        text.append(" · ")
        text.append_text(state_text(snapshot.state))
        if snapshot.summary is not None and snapshot.summary.failed:  # finished is not the same as done well
            text.append(" · ")
            text.append(f"{fmt.count(snapshot.summary.failed)} failed", style="bold red")
        text.append(f" · {fmt.duration(snapshot.elapsed_s)}  ")
        if snapshot.dry_run:
            text.append("DRY RUN", style="bold black on yellow")
            text.append("  ")
        src, dst = fmt.display_path(snapshot.src_root), fmt.display_path(snapshot.dst_root)
        room = self.size.width - text.cell_len - 3  # both paths and their arrow in what is left
        if self.size.width and len(src) + len(dst) > room:  # cut both from the left, so both leaves show
            dst = fmt.tail(dst, max(room // 2, room - len(src)))
            src = fmt.tail(src, room - len(dst))
        text.append(src, style="bold")
        text.append(" → ")
        text.append(dst, style="bold")
        self.show_text(text)


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
                            yield Cell(classes="round-count")
                    else:
                        yield Cell(classes=f"row-{row}", id=f"{side}-{row}")

    _cells: dict[tuple[str, str], Cell] | None = None

    def _bind(self) -> None:
        """Find the cells once (on the first draw), not on every draw."""
        self._cells = {
            (side, row): self.query_one(f"#{side}-{row}", Cell)
            for side in ("src", "dst") for row in self.ROWS if row != "progress"
        }
        self._bars = {side: self.query_one(f"#{side}-progress ProgressBar", ProgressBar)
                      for side in ("src", "dst")}
        self._counts = {side: self.query_one(f"#{side}-progress .round-count", Cell)
                        for side in ("src", "dst")}
        self._bar_drawn: dict[str, tuple[int, int]] = {}
        self._count_width: dict[str, int] = {}
        self._waits_row = list(self.query(".row-waits"))
        self._waits_shown: bool | None = None

    def key(self, snapshot: MigrationSnapshot) -> Hashable:
        return snapshot.src, snapshot.dst

    def draw(self, snapshot: MigrationSnapshot) -> None:
        if self._cells is None:
            self._bind()
        for queue in (snapshot.src, snapshot.dst):
            self._draw_queue(queue)
        waits = any(q.wait_reason for q in (snapshot.src, snapshot.dst))
        if waits != self._waits_shown:
            self._waits_shown = waits
            for cell in self._waits_row:
                cell.display = waits

    def _cell(self, queue: QueueView, row: str, content: Text) -> None:
        self._cells[queue.side, row].show_text(content)

    def _draw_queue(self, queue: QueueView) -> None:
        # a side's column shows whichever of its queues ran last: name it unless it is the traversal, whose
        # rounds the gate counts (a copy's round 7 beside the gate's "SRC round 11" is another count)
        named = "" if queue.mode == "traversal" else f"{queue.mode} "
        heading = Text(f"{queue.side.upper()} {named}round {queue.round} · ", style="bold")
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
        if self._bar_drawn.get(queue.side) != (total, done):
            self._bar_drawn[queue.side] = (total, done)
            self._bars[queue.side].update(total=total, progress=done)
        # Right-aligned in the widest count this side has shown ("expected/expected" at least):
        # while counts grow and rounds change, the bar beside it keeps its width and the
        # screen its layout. It widens a few times a run, and never narrows.
        expected = fmt.count(queue.round_expected)
        count = f"{fmt.count(queue.round_completed)}/{expected}"
        width = self._count_width[queue.side] = max(
            self._count_width.get(queue.side, 0), len(count), 2 * len(expected) + 1
        )
        self._counts[queue.side].show_text(Text(count.rjust(width)))

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
        yield Cell(id="gate-text")

    def key(self, snapshot: MigrationSnapshot) -> Hashable:
        return snapshot.gate, snapshot.settings

    def draw(self, snapshot: MigrationSnapshot) -> None:
        gate = snapshot.gate
        rows: list[tuple[str | Text, str | Text]] = [(
            Text("ahead", style="dim"),
            Text(f"SRC may run at most {gate.max_src_ahead} rounds ahead of DST", style="dim"),
        )]
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
            rows.append((f"{name} round {round_}", verdict))
        if snapshot.settings:
            settings = " · ".join(f"{name}={value}" for name, value in snapshot.settings)
            rows.append((Text("settings", style="dim"), Text(settings, style="dim")))
        grid = Table.grid(padding=(0, 2))
        grid.add_column(no_wrap=True, style="bold")
        grid.add_column()
        for row in rows:
            grid.add_row(*row)
        cell = self.query_one("#gate-text", Cell)
        label_width = max(cell_len(str(label)) for label, _ in rows)
        cell.show_content(grid, self.key(snapshot), grid_extent(cell, rows, label_width, 2))


def history_key(history: tuple[RatePoint, ...]) -> Hashable:
    """Identifies a rate history without comparing every point: points are only ever appended
    (about one a second, each with its time) and the oldest dropped, so the first and last
    times and the length tell two histories apart."""
    if not history:
        return 0
    return len(history), history[0], history[-1]


class ThroughputPanel(Panel):
    TITLE = "Throughput"
    LABEL_WIDTH = 9

    def compose(self) -> ComposeResult:
        yield Cell(id="rates")
        yield ProgressBar(total=1, show_eta=False, id="copy-progress")
        with Horizontal(classes="spark-row"):
            yield Label("discovery", classes="spark-label")
            yield Sparkline([], id="discovery-spark")
        with Horizontal(classes="spark-row"):
            yield Label("copy B/s", classes="spark-label")
            yield Sparkline([], id="copy-spark")

    _rates: Cell | None = None

    def _bind(self) -> None:
        self._rates = self.query_one("#rates", Cell)
        self._bar = self.query_one("#copy-progress", ProgressBar)
        self._bar_drawn: tuple[int, int] | None = None
        self._sparks = (self.query_one("#discovery-spark", Sparkline),
                        self.query_one("#copy-spark", Sparkline))
        self._history_drawn: Hashable = None

    def key(self, snapshot: MigrationSnapshot) -> Hashable:
        rates = snapshot.src.discovery_rate, snapshot.dst.discovery_rate
        return rates, snapshot.copy, history_key(snapshot.history)

    def draw(self, snapshot: MigrationSnapshot) -> None:
        if self._rates is None:
            self._bind()
        copy = snapshot.copy
        self._draw_rates(snapshot.src.discovery_rate, snapshot.dst.discovery_rate, copy)

        if copy.items_total:
            drawn = copy.items_total, min(copy.items_done, copy.items_total)
            if drawn != self._bar_drawn:
                self._bar_drawn = drawn
                self._bar.update(total=drawn[0], progress=drawn[1])
        self._bar.display = copy.items_total > 0  # no-op when unchanged

        history = snapshot.history
        drawn_history = history_key(history)
        if drawn_history != self._history_drawn:
            self._history_drawn = drawn_history
            # one sample is not a curve: Textual's Sparkline draws a single value as a full bar, even 0 B/s
            history = history if len(history) > 1 else ()
            self._sparks[0].data = [p.discovery_rate for p in history]
            self._sparks[1].data = [p.bytes_per_s for p in history]

    def _draw_rates(self, src_rate: float, dst_rate: float, copy: CopyView) -> None:
        items = fmt.count(copy.items_done)
        if copy.items_total:
            items += f" / {fmt.count(copy.items_total)}"
        volume = fmt.size(copy.bytes_done)
        if copy.bytes_total:
            volume += f" / {fmt.size(copy.bytes_total)}"
        # items and bytes on rows of their own: on one, a run's totals wrapped a size away from its unit
        done = Text(f"{items} items")
        if copy.failed:
            done.append(f" · {fmt.count(copy.failed)} failed", style="red")
        rows = (
            ("discovery", f"SRC {fmt.rate(src_rate)}/s · DST {fmt.rate(dst_rate)}/s"),
            ("copy", f"{fmt.rate(copy.items_per_s)} items/s · {fmt.bytes_per_second(copy.bytes_per_s)}"),
            ("done", done),
            ("bytes", volume),
            ("", f"{fmt.count(copy.folders_created)} folders created · "
                 f"{fmt.count(copy.skipped)} became newer"),  # on DST, since listed: kept
            ("ETA", fmt.duration(copy.eta_s)),
        )
        grid = Table.grid(padding=(0, 1))
        grid.add_column(width=self.LABEL_WIDTH, style="bold")
        grid.add_column()
        for label, value in rows:
            grid.add_row(label, value)
        extent = grid_extent(self._rates, rows, self.LABEL_WIDTH, 1)
        self._rates.show_content(grid, (src_rate, dst_rate, copy), extent)


class LevelsPanel(Panel):
    TITLE = "Level caches"
    # "taken": out of the level, in the queue's buffer or in flight (the Rounds panel tells the two apart); not
    # "running", which a paused queue's buffered tasks are not
    COLUMNS = ("queue", "depth", "nodes", "pending", "taken", "done", "failed")

    def compose(self) -> ComposeResult:
        table = DataTable(cursor_type="none", zebra_stripes=True, id="levels-table")
        self._columns = table.add_columns(*self.COLUMNS)
        self._rows_drawn: dict[str, list[Hashable]] = {}  # row key -> text keys of its cells
        self._table = table
        yield table

    def key(self, snapshot: MigrationSnapshot) -> Hashable:
        return snapshot.src.levels, snapshot.dst.levels

    def draw(self, snapshot: MigrationSnapshot) -> None:
        rows: dict[str, list[Text]] = {}
        for queue in (snapshot.src, snapshot.dst):
            side = queue.side.upper()
            for level in queue.levels:
                rows[f"{side} {level.depth}"] = self._row(
                    side, level.depth, level.nodes, level.pending,
                    level.in_progress, level.successful, level.failed,
                )
            totals = [sum(getattr(level, name) for level in queue.levels)
                      for name in ("nodes", "pending", "in_progress", "successful", "failed")]
            rows[f"{side} total"] = self._row(side, "total", *totals, style="bold")
        table = self._table
        if list(rows) != list(self._rows_drawn):
            # Other levels: rebuild the table.
            table.clear()
            for key, cells in rows.items():
                table.add_row(*cells, key=key)
            self._rows_drawn = {key: [text_key(c) for c in cells] for key, cells in rows.items()}
            return
        # The same levels: change only the cells that changed (every change redraws the whole
        # table, but nothing else: no clearing, no new rows to measure). A column widens as
        # a longer number arrives, and never narrows, as when rows are added.
        for key, cells in rows.items():
            drawn = self._rows_drawn[key]
            for i, (cell, column) in enumerate(zip(cells, self._columns)):
                cell_key = text_key(cell)
                if cell_key != drawn[i]:
                    drawn[i] = cell_key
                    wider = cell_len(cell.plain) > table.columns[column].content_width
                    table.update_cell(key, column, cell, update_width=wider)

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
            ("not on SRC", fmt.count(summary.not_on_src), *(("excluded", fmt.count(summary.excluded))
                                                             if summary.excluded else ("", ""))),
        ]
        if summary.vanished:  # deleted on SRC after their listing: not failures, nothing was there to copy
            rows.append(("vanished", fmt.count(summary.vanished), "", ""))
        if summary.will_fail:  # a plan's: DST has something else where it would copy (migrate run -n names them)
            rows.append(("will fail", Text(fmt.count(summary.will_fail), style="red"), "", ""))
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim")
        grid.add_column(justify="right", style="bold")
        grid.add_column(style="dim")
        grid.add_column(justify="right", style="bold")
        for row in rows:
            grid.add_row(*row)
        self.query_one("#summary-text", Static).update(grid)
