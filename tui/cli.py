"""``migrate-tui`` command line: parse, open or create the run, launch the console.

Bad input ends here with one line on stderr and exit code 2, before any screen
is drawn. The engine is imported only now, so the console package imports
without it.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from engine.threads import THREAD_LIMIT, ThreadLimit, is_thread_limit
from engine.version import VersionAction

PROG = "migrate-tui"
USAGE_ERROR = 2


class CliError(Exception):
    """A one-line, operator-facing reason why the console cannot start."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the usage block too
        raise CliError(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Operator console for a migrate-tui run: watch it, pause, retry, resume.",
        epilog="Examples: migrate-tui --db run.duckdb /data/src /data/dst   (new run)\n"
        "          migrate-tui --db run.duckdb                     (open a run)\n"
        "          migrate-tui --demo                               (try it on a sample tree)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=VersionAction)
    parser.add_argument("--db", metavar="FILE", help="the run's DuckDB file")
    parser.add_argument("paths", nargs="*", metavar="SRC DST", help="trees to migrate (new run only)")
    parser.add_argument("-n", "--dry-run", action="store_true", help="plan the run, copy nothing")
    parser.add_argument(
        "--demo", action="store_true", help="migrate a generated sample tree in a temporary folder"
    )
    return parser


@dataclass
class Launch:
    controller: Any
    start_run: bool
    farewell: str | None = None  # printed after the console closes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.demo:
        if args.db or args.paths:
            raise CliError("--demo makes its own trees and database; give no --db, SRC or DST")
        return args
    if not args.db:
        raise CliError("--db FILE is required (or try --demo)")
    if len(args.paths) not in (0, 2):
        got = len(args.paths)
        raise CliError(f"give both SRC and DST, or neither (got {got} path{'s' if got > 1 else ''})")
    if not args.paths:
        if args.dry_run:
            raise CliError("--dry-run applies to a new run: give SRC and DST")
        if not Path(args.db).exists():
            raise CliError(f"{args.db}: no such run file (give SRC and DST to start a new run)")
    return args


def launch(args: argparse.Namespace) -> Launch:
    """Open or create the migration; engine input errors become CliError."""
    from engine.errors import UserError
    from engine.migration import Migration

    try:
        if args.demo:
            from engine.demo import create_demo

            base = Path(tempfile.mkdtemp(prefix="migrate-tui-demo-"))
            controller = create_demo(base, watchable=True)
            return Launch(controller, True, f"{PROG}: demo trees and database kept in {base}")
        from engine.config import apply_to_resumed_run, load, unknown_variables

        loaded = load(db_path=str(args.db))  # migrate.toml beside the file, MIGRATE_*: validated first
        notes = unknown_variables()
        if args.paths:
            src, dst = args.paths
            migration = Migration.create(args.db, src, dst, loaded.settings, dry_run=args.dry_run,
                                         given=loaded.given())
            notes += migration.start_notes
        else:  # what R, t or the run itself then use: as `migrate resume` would
            migration = Migration.open(args.db)
            apply_to_resumed_run(migration, loaded, notes.append)
        if notes:
            migration.message = "; ".join(notes)  # the console's message line
        return Launch(migration, bool(args.paths))
    except UserError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        raise CliError(f"{exc.strerror or exc}{where}") from None


def _quietly(action) -> None:
    """Cleanup after the console closed: report a failure in one line, go on."""
    try:
        action()
    except Exception as exc:
        print(f"{PROG}: error: while closing the run: {exc}", file=sys.stderr)


def unfinished_run(app, controller) -> str | None:
    """The run file of a run this console started or resumed and that did not finish (None otherwise)."""
    if not app.drove_run:
        return None
    snapshot = controller.snapshot()
    return None if snapshot.phase in ("done", "planned") else snapshot.db_path


def failed_entries(app, controller) -> int:
    """How many entries failed in a run this console started or resumed and saw finish (0 otherwise): as
    with `migrate run`, they make the exit code 1."""
    if not app.drove_run:
        return 0
    snapshot = controller.snapshot()
    if snapshot.phase not in ("done", "planned") or snapshot.summary is None:
        return 0
    return snapshot.summary.failed


def run(argv: Sequence[str] | None = None) -> int:
    try:
        launched = launch(parse_args(argv))
    except CliError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except Exception as exc:  # an engine bug: still one line; MIGRATE_TUI_DEBUG=1 shows it all
        if os.environ.get("MIGRATE_TUI_DEBUG"):
            raise
        print(f"{PROG}: error: could not open the run: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1

    from tui.app import MigrationConsole

    controller = launched.controller
    app = MigrationConsole(controller, start_run=launched.start_run)
    unfinished = None
    failed, db = 0, None
    try:
        app.run()
    except RuntimeError as exc:
        # Textual's writer thread not started, then joined as the app shuts down: past the limit on threads too
        if not (is_thread_limit(exc) or "thread before it is started" in str(exc)):
            raise
        app.thread_limited = True
    finally:
        if app.force_stop_thread is not None:
            app.force_stop_thread.join()
        if app.force_stop_error:  # in that thread, or here when it could not start
            print(f"{PROG}: error: forced stop failed: {app.force_stop_error}", file=sys.stderr)
        elif app.force_stop_thread is None and not app.engine_stopped:
            # The console ended some other way (a crash, a signal): leave the file resumable.
            _quietly(lambda: controller.stop(force=True))
        unfinished = unfinished_run(app, controller)
        stop_reason = controller.snapshot().stop_reason if unfinished else None
        failed = failed_entries(app, controller)
        db = controller.snapshot().db_path
        # Not in the Controller protocol, but Migration has it: seal and close the DuckDB file.
        close = getattr(controller, "close", None)
        if callable(close):
            _quietly(close)
    if launched.farewell:
        print(launched.farewell)
    if app.thread_limited:
        print(f"{PROG}: error: {THREAD_LIMIT}" + (f"; then resume with: migrate-tui --db {unfinished}"
                                                  if unfinished else ""), file=sys.stderr)
        return ThreadLimit.exit_code
    last_words, code = ending(app, unfinished, stop_reason, failed, db)
    if last_words:
        print(last_words, file=sys.stderr)
    return code


def ending(app, unfinished: str | None, stop_reason: str | None = None, failed: int = 0,
           db: str | None = None) -> tuple[str | None, int]:
    """What the console says on stderr as it ends, and its exit code (as `migrate` would end: a script can tell
    a stopped run from a finished one, and a refused one from both)."""
    if app.refused:  # taking the run up (R, t, c, the start) was refused: as `migrate` ends a refused command
        return f"{PROG}: error: {app.refused}", 2
    if unfinished is not None and stop_reason:  # stopped on its own, by what must be fixed first (exit 3)
        return (f"{PROG}: stopped: {stop_reason}; fix that, then resume with: migrate-tui --db {unfinished} (R), "
                f"or migrate resume --db {unfinished}", 3)
    if unfinished is not None:
        return (f"{PROG}: stopped; resume with: migrate-tui --db {unfinished} (R), or migrate resume --db "
                f"{unfinished}", app.return_code or 130)
    if failed:  # finished, not all well: exit 1 and where to read why, as `migrate run` ends
        return (f"{PROG}: {failed} entries failed; list them with: migrate report --db {db} --failed",
                app.return_code or 1)
    return None, app.return_code or 0
