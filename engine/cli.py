"""`migrate`: the headless command line. run | resume | retry | status | report | demo | config."""

from __future__ import annotations

import argparse
import csv
import functools
import json
import os
import shlex
import signal
import sys
import tempfile
import time
from pathlib import Path

import humanize

from engine import listing
from engine.errors import UserError
from engine.model import display, unambiguous
from engine.threads import ThreadLimit
from engine.version import VersionAction

PROG = "migrate"


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2, like every other bad input."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{message} (see '{self.prog} --help')")


def _settings_flags(parser: argparse.ArgumentParser) -> None:
    from engine.settings import Settings  # pydantic: imported once the listing helpers are on their way
    group = parser.add_argument_group("settings (override the settings file and MIGRATE_* variables)")
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        if field.annotation is bool:
            group.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None,
                               help=field.description)
        elif name == "exclude":
            group.add_argument(flag, dest=name, action="append", default=None, metavar="GLOB",
                               help=field.description)
        else:
            group.add_argument(flag, dest=name, default=None, metavar="VALUE", help=field.description)
    group.add_argument("--config", default=None, metavar="FILE",
                       help="settings file (default: migrate.toml beside the --db file, if present)")


def _cli_overrides(args: argparse.Namespace) -> dict:
    from engine.settings import Settings
    return {name: getattr(args, name) for name in Settings.model_fields if getattr(args, name, None) is not None}


def _load_layers(args: argparse.Namespace):
    """Effective settings (defaults < settings file < MIGRATE_* < flags) and where each came from; UserError
    (exit 2) when invalid."""
    from engine.config import load, unknown_variables
    loaded = load(config=args.config, db_path=getattr(args, "db", None), overrides=_cli_overrides(args))
    for note in unknown_variables():
        _note(note)
    return loaded


def _note(text: str) -> None:
    print(f"{PROG}: note: {text}", file=sys.stderr)


def _build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog=PROG, description="Migrate a large file tree, round by round, resumably.")
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)

    run = sub.add_parser("run", help="compare SRC and DST, then copy what is missing or older on DST")
    run.add_argument("src", help="source folder")
    run.add_argument("dst", help="destination folder (created if missing)")
    run.add_argument("--db", required=True, help="the run file (DuckDB); an unfinished run in it is continued")
    run.add_argument("-n", "--dry-run", action="store_true", help="compare only: write nothing to DST")
    run.add_argument("--use-plan", action="store_true",
                     help="after a dry run in the same --db: copy its plan as it stands, without comparing again")
    _settings_flags(run)

    for name, text in (("resume", "continue an interrupted run from its file"),
                       ("retry", "run failed and pending tasks again, then copy")):
        p = sub.add_parser(name, help=text)
        p.add_argument("--db", required=True)
        _settings_flags(p)

    status = sub.add_parser("status", help="where the run in a file stands")
    status.add_argument("--db", required=True)

    report = sub.add_parser("report", help="one record per source and destination entry")
    report.add_argument("--db", required=True)
    report.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    report.add_argument("--failed", action="store_true", help="only the failures, with their reasons")
    report.add_argument("--output", "-o", default="-", help="file to write (default: standard output)")

    demo = sub.add_parser("demo", help="generate a sample tree in a temporary folder and migrate it")
    demo.add_argument("--files", type=int, default=5000)
    demo.add_argument("--dir", default=None, help="where to generate it (default: a new temporary folder)")

    config = sub.add_parser("config", help="settings")
    config_sub = config.add_subparsers(dest="config_command", required=True, parser_class=ArgumentParser)
    show = config_sub.add_parser("show", help="the effective settings and where each value came from")
    show.add_argument("--db", default=None)
    _settings_flags(show)

    watch = sub.add_parser("watch", help="after a migration, mirror new and changed source files live")
    watch.add_argument("src")
    watch.add_argument("dst")
    watch.add_argument("--db", required=True)
    watch.add_argument("--propagate-deletes", action="store_true",
                       help="delete on DST what is deleted on SRC, when DST still holds the copy "
                            "(default: only report it)")
    watch.add_argument("--rescan", action="store_true",
                       help="compare the trees again before watching, even if the run in --db is done "
                            "(catches changes made while nothing was watching)")
    _settings_flags(watch)
    return parser


# progress -------------------------------------------------------------------------------------------

def _n(value: float) -> str:
    return humanize.intcomma(int(value))


def progress_line(snap) -> str:
    parts = [f"{snap.phase:<9}"]
    if snap.phase in ("traversal", "retry"):
        for q in (snap.src, snap.dst):
            state = "" if q.state == "running" else f" {q.state}"
            parts.append(f"{q.side.upper()} r{q.round}{state} {_n(q.files_discovered + q.folders_discovered)}")
        parts.append(f"{humanize.intword(int(snap.src.discovery_rate)) if snap.src.discovery_rate >= 1e6 else _n(snap.src.discovery_rate)} entries/s")
    elif snap.phase == "copy":
        c = snap.copy
        parts.append(f"{_n(c.items_done)}/{_n(c.items_total)} items")
        parts.append(f"{humanize.naturalsize(c.bytes_done, binary=True)}/{humanize.naturalsize(c.bytes_total, binary=True)}")
        parts.append(f"{humanize.naturalsize(c.bytes_per_s, binary=True)}/s {_n(c.items_per_s)} items/s")
        if c.eta_s is not None:
            parts.append(f"ETA {humanize.precisedelta(int(c.eta_s))}")
    if snap.failed_count:
        parts.append(f"failed {_n(snap.failed_count)}")
    if snap.state == "paused":
        parts.append("PAUSED")
    return " · ".join(parts)


def print_summary(migration, out=None) -> None:
    s = migration.summary
    if s is None:
        return
    out = out or sys.stdout
    print(migration.message or "", file=out)
    print(f"  source       {_n(s.src_files)} files, {_n(s.src_folders)} folders", file=out)
    print(f"  identical    {_n(s.identical)}", file=out)
    print(f"  to copy      {_n(s.to_copy)}" + (f"   copied {_n(s.copied)} "
          f"({humanize.naturalsize(s.bytes_copied, binary=True)})" if not migration.dry_run else ""), file=out)
    print(f"  kept newer   {_n(s.dst_newer)} destination files newer than the source", file=out)
    print(f"  dst only     {_n(s.not_on_src)} entries not on the source (untouched)", file=out)
    print(f"  failed       {_n(s.failed)}", file=out)
    if s.excluded:
        print(f"  excluded     {_n(s.excluded)} source entries, by the exclude patterns (an excluded folder "
              "counts once)", file=out)
    if s.vanished:
        print(f"  vanished     {_n(s.vanished)} source entries deleted after they were listed (nothing to copy)",
              file=out)
    if migration.specials_skipped:
        print(f"  not migrated {_n(migration.specials_skipped)} special files on the source (FIFOs, sockets, "
              "devices), named above", file=out)
    if s.will_fail:  # what the plan's copy will refuse: the plan says copy, the destination is in the way
        count, under, first = migration.store.in_the_way()
        named = "; ".join(f"'{display(p)}': a {d} where the source has a {s_}" for p, d, s_ in first)
        below = f", and the {_n(under)} below them" if under else ""
        print(f"  will fail    {_n(count + under)} entries: {_n(count)} blocked by what the destination has "
              f"there{below} ({named}{'; ...' if count > len(first) else ''}): move those away before copying",
              file=out)
    print(f"  elapsed      {s.elapsed_s:.1f} s", file=out)
    if migration.dry_run and s.to_copy:
        print(f"  next         {copy_plan_command(migration)}   (copies this plan as reviewed; without "
              "--use-plan the trees are compared again)", file=out)


def copy_plan_command(migration) -> str:
    """The command that copies a finished dry run's plan, ready to paste from any folder: absolute paths
    (which never start with a dash), quoted for the shell."""
    paths = (migration.src_root, migration.dst_root, "--db", os.path.abspath(migration.store.path))
    return " ".join([PROG, "run", *map(shell_quote, paths), "--use-plan"])


def shell_quote(path: str) -> str:
    """shlex.quote, unless the path holds what a terminal would not show as it is (a byte that is not
    UTF-8, a newline, a tab): then bash's $'...' with those bytes as \\xNN, so that what is pasted is the
    path."""
    if path.isprintable():  # an undecodable byte (a lone surrogate) is not
        return shlex.quote(path)
    parts = []
    for char in path:
        if not char.isprintable():
            parts.append("".join(f"\\x{byte:02x}" for byte in os.fsencode(char)))
        else:
            parts.append("\\" + char if char in "\\'" else char)
    return "$'" + "".join(parts) + "'"


def _drive(migration, quiet: bool = False, notes: Sequence[str] = ()) -> int:
    """Run to the end, printing progress; SIGINT/SIGTERM stop gracefully, a second one at once."""
    signals = {"count": 0}

    def on_signal(signum, frame):
        signals["count"] += 1
        force = signals["count"] > 1
        migration.stop(force=force)
        print(f"\n{PROG}: " + ("stopping now (the run file stays resumable)" if force else
                                "stopping: finishing in-flight tasks, then sealing (Ctrl-C again stops at once; "
                                "the run file stays resumable either way)"), file=sys.stderr)

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    tty = sys.stderr.isatty()
    # what hot reload applied or refused, and special files left out, on lines of their own (over the
    # progress line on a terminal)
    def say(text: str, kind: str = "") -> None:
        print(f"\r\033[K{PROG}: {kind}{text}" if tty else f"{PROG}: {kind}{text}", file=sys.stderr, flush=True)
    migration.on_settings_message = say
    migration.on_notice = functools.partial(say, kind="note: ")
    last_line = 0.0
    try:
        try:
            migration.start()
        except ThreadLimit:
            pass  # nothing ran; told below as a run that stopped, resumable
        except UserError:
            migration.close()  # refused (the roots changed since): the run file as it was, and closed
            raise
        for note in notes:  # once it started: a start refused (the roots changed) says only why
            _note(note)
        while not migration.wait(0.5 if tty else 1.0):
            if signals["count"] > 1:
                break
            now = time.monotonic()
            if not quiet and (tty or now - last_line >= 5):
                last_line = now
                line = progress_line(migration.snapshot())
                print(f"\r\033[K{line}" if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True)
        if tty and not quiet:
            print(file=sys.stderr)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    if signals["count"] > 1:  # forced: the file is left as the last committed seal, resumable
        print(f"{PROG}: stopped; resume with: {PROG} resume --db {migration.store.path}", file=sys.stderr, flush=True)
        os._exit(130)
    if migration.fatal:
        migration.close()
        if migration.stopped_resumable:
            return _stopped_resumable(migration.fatal, migration.store.path)
        raise UserError(migration.fatal)
    if migration.summary is None:
        migration.close()
        print(f"{PROG}: stopped; resume with: {PROG} resume --db {migration.store.path}", file=sys.stderr)
        return 130
    print_summary(migration)
    failed = migration.summary.failed
    migration.close()
    if failed:
        print(f"{PROG}: {failed} entries failed; list them with: {PROG} report --db {migration.store.path} --failed",
              file=sys.stderr)
        return 1
    return 0


def _stopped_resumable(reason: str, db: str, command: str = "resume") -> int:
    """A run stopped by what must be fixed first: one line with the command that takes it up again; exit 3."""
    print(f"{PROG}: stopped: {reason}; the run file stays resumable: fix that, then {PROG} {command} --db {db}",
          file=sys.stderr)
    return 3


# commands -------------------------------------------------------------------------------------------

def cmd_run(args) -> int:
    from engine.migration import Migration
    if args.use_plan and args.dry_run:  # before anything is opened: nothing written
        raise UserError("--use-plan copies a dry run's plan and --dry-run copies nothing: give one of them")
    loaded = _load_layers(args)
    migration = Migration.create(args.db, args.src, args.dst, loaded.settings, dry_run=args.dry_run,
                                 use_plan=args.use_plan, given=loaded.given())
    return _drive(migration, notes=migration.start_notes)


def cmd_resume(args, retry: bool = False) -> int:
    from engine.migration import Migration
    from engine.config import apply_to_resumed_run
    loaded = _load_layers(args)  # validated before the run file is opened
    migration = Migration.open(args.db)
    apply_to_resumed_run(migration, loaded, _note)
    if not retry and not migration.interrupted:
        migration.close()
        print(f"the run in '{args.db}' is not interrupted ({migration.phase}); nothing to resume")
        return 0
    try:
        migration.retry() if retry else migration.resume_from_db()
    except ThreadLimit as exc:  # nothing ran
        migration.close()
        return _stopped_resumable(str(exc), args.db, "retry" if retry else "resume")
    except UserError:
        migration.close()  # refused (the roots changed since): the run file as it was, and closed
        raise
    return _drive(migration)


def cmd_status(args) -> int:
    from engine.migration import Migration
    from engine.summary import summarize
    m = Migration.open(args.db)
    try:
        s = summarize(m.store, m.elapsed())
        phase = m.phase if not m.interrupted else f"interrupted during {m.phase}"
        print(f"run      {m.src_root} -> {m.dst_root}")
        print(f"file     {args.db}")
        print(f"phase    {phase}" + (" (dry run)" if m.dry_run else ""))
        for side in ("src", "dst"):
            stats = m.store.stats(side)
            sealed = [row[0] for row in stats if row[1] == 0]
            print(f"{side}      {len(stats)} depth{'s' if len(stats) != 1 else ''} known, pending at "
                  f"{[row[0] for row in stats if row[1]] or 'none'}, sealed through depth {max(sealed, default=0)}")
        print(f"source   {_n(s.src_files)} files, {_n(s.src_folders)} folders; {_n(s.identical)} identical, "
              f"{_n(s.to_copy)} to copy ({_n(s.copied)} copied), {_n(s.dst_newer)} newer on destination kept, "
              f"{_n(s.not_on_src)} destination only")
        print(f"failed   {_n(s.failed)}" + (f"; excluded {_n(s.excluded)}" if s.excluded else "")
              + (f"; vanished {_n(s.vanished)}" if s.vanished else ""))
        seconds = round(m.elapsed())  # rounded, as the console shows it
        print(f"elapsed  {humanize.precisedelta(seconds) if seconds >= 1 else '0 seconds'}")
        mirrored = m.store.mirror_outcomes()
        if mirrored:  # what `migrate watch` did after the run: the counts above are the run's own
            print(f"watch    {_n(sum(mirrored.values()))} events recorded by migrate watch since the run: "
                  + ", ".join(f"{_n(n)} {outcome.replace('_', ' ')}" for outcome, n in mirrored.items())
                  + " (table mirror_events)")
        if m.interrupted:
            print(f"next     {PROG} resume --db {args.db}")
        elif m.phase == "planned" and s.to_copy:
            print(f"next     {copy_plan_command(m)}   (copies this plan as reviewed)")
    finally:
        m.close()
    return 0


REPORT_FIELDS = ("side", "path", "type", "size", "traversal_status", "action", "copy_status", "error")


def report_action(side, traversal, action, copy_status) -> str:
    if traversal == "failed" or copy_status == "failed":
        return "failed"
    return action or ""


def _names_the_run_file(path: str, db: str) -> bool:
    """path is the run file or its log (DuckDB's .wal, replayed on the next open), by any name."""
    real = os.path.realpath(path)
    if real in (os.path.realpath(db), os.path.realpath(db) + ".wal", os.path.realpath(db + ".wal")):
        return True
    try:
        return os.path.samefile(path, db)  # a hard link
    except OSError:
        return False


def cmd_report(args) -> int:
    from engine.store import Store
    if not os.path.exists(args.db):
        raise UserError(f"run file '{args.db}' does not exist")
    if args.output != "-" and _names_the_run_file(args.output, args.db):  # opened "w", it would be emptied
        raise UserError(f"'{args.output}' is the run file itself (or its log); give -o another file")
    store = Store.open(args.db)
    try:
        out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8", newline="")
    except OSError as exc:
        store.close()
        raise UserError(f"cannot write the report to '{args.output}' ({exc.strerror}); "
                        "give a file path in an existing, writable folder") from None
    try:
        writer = csv.writer(out) if args.format == "csv" else None
        if writer:
            writer.writerow(REPORT_FIELDS)
        for side, path, type_, size, traversal, action, copy_status, error in store.report_rows(args.failed):
            record = (side, unambiguous(path), type_, size, traversal,
                      report_action(side, traversal, action, copy_status), copy_status, error)
            if writer:
                writer.writerow(record)
            else:
                out.write(json.dumps(dict(zip(REPORT_FIELDS, record)), ensure_ascii=False) + "\n")
        if out is not sys.stdout:
            out.close()  # flushes: a full disk may say so only now
    except BrokenPipeError:
        raise  # a reader that left (| head): main() ends quietly
    except OSError as exc:  # the disk is full, an I/O error: one line, not a traceback
        where = "standard output" if out is sys.stdout else f"'{args.output}'"
        raise UserError(f"cannot write the report to {where} ({exc.strerror or exc}); it is incomplete: "
                        "free some space or give -o a file elsewhere") from None
    finally:
        if out is not sys.stdout and not out.closed:
            try:
                out.close()
            except OSError:
                pass
        store.close()
    return 0


def cmd_demo(args) -> int:
    from engine.demo import create_demo
    if args.files < 1:
        raise UserError(f"--files {args.files}: give a number of files to generate, at least 1")
    if args.dir and os.path.lexists(args.dir) and not os.path.isdir(args.dir):
        raise UserError(f"'{args.dir}' exists and is not a folder; give a folder for the demo trees")
    if args.dir and not os.path.isdir(os.path.dirname(os.path.abspath(args.dir))):
        raise UserError(f"the folder '{os.path.dirname(os.path.abspath(args.dir))}' does not exist; create it first")
    if args.dir and os.path.isdir(args.dir) and os.listdir(args.dir):  # an earlier demo's trees, or anything else
        raise UserError(f"'{args.dir}' is not empty; give --dir a new or empty folder for the demo trees")
    # absolute: the run file stores its roots as given, and a relative pair names other folders (or none)
    # to a resume, a watch or the console started from another folder
    base = Path(os.path.abspath(args.dir)) if args.dir else Path(tempfile.mkdtemp(prefix="migrate-demo-"))
    base.mkdir(exist_ok=True)
    print(f"generating {args.files:,} files in {base} ...", file=sys.stderr)
    migration = create_demo(base, files=args.files)
    print(f"migrating {migration.src_root} -> {migration.dst_root} (run file {migration.store.path})",
          file=sys.stderr)
    return _drive(migration)


def cmd_config(args) -> int:
    from engine.config import describe
    loaded = _load_layers(args)
    if args.db and os.path.isfile(args.db):  # an existing run: what its resume would use
        from engine.store import Store
        store = Store.open(args.db)
        try:
            info = store.run_info()
        finally:
            store.close()
        if info is not None:
            loaded = loaded.over_run(info.settings, args.db)
    print(describe(loaded))
    return 0


def cmd_watch(args) -> int:
    """Listen to SRC first, finish (or, with --rescan, redo) the run in --db, then mirror changes live."""
    from engine.migration import Migration
    from engine.validate import check_roots
    from engine.watch import LiveMirror, run_in_file
    from engine.store import not_writable
    loaded = _load_layers(args)
    src, dst = check_roots(args.src, args.dst, args.db)
    refusal = not_writable(args.db)  # before saying what it is about to do
    if refusal is not None:
        raise refusal
    info = run_in_file(args.db, src, dst)
    phase = info.phase if info is not None else None
    migration = None
    if phase != "done" or args.rescan:  # the run to finish (or start) first, with the settings it will use
        migration = Migration.create(args.db, src, dst, loaded.settings, given=loaded.given())
        settings = migration.settings
    else:  # the mirror goes on from the finished run: its settings, but what is set now
        settings = Migration.continued_settings(args.db, info.settings, loaded.settings, loaded.given())
    try:
        live = LiveMirror(src, dst, args.db, settings, propagate_deletes=args.propagate_deletes)
        live.listen()  # from here on no source change is missed, not even during the catch-up below
    except BaseException:
        if migration is not None:
            migration.close()
        raise
    try:
        if migration is not None:
            what = "comparing the trees again" if phase == "done" else \
                ("running the migration" if phase is None else "finishing the migration in the run file")
            print(f"{PROG}: {what} before watching", file=sys.stderr)
            code = _drive(migration)
            if code not in (0, 1):
                return code  # stopped: the run file stays resumable
        else:
            print(f"{PROG}: the run in '{args.db}' is done; changes made since it ended and before now are not "
                  f"seen (use --rescan to compare the trees again first)", file=sys.stderr)
        return live.serve()
    finally:
        live.close()


TRAVERSING_COMMANDS = ("run", "resume", "retry")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    early = argv[:1] and argv[0] in TRAVERSING_COMMANDS
    if early:  # a listing helper per default traversal worker, booting on the other core while we import
        listing.start_early(2 * listing.DEFAULT_TRAVERSAL_WORKERS)
    try:
        args = _build_parser().parse_args(argv)
        command = {"run": cmd_run, "resume": cmd_resume, "retry": lambda a: cmd_resume(a, retry=True),
                   "status": cmd_status, "report": cmd_report, "demo": cmd_demo, "config": cmd_config,
                   "watch": cmd_watch}[args.command]
        return command(args)
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        from engine.store import out_of_memory  # DuckDB is loaded already when it is DuckDB's
        explained = out_of_memory(exc)
        if explained is None:
            raise
        print(f"{PROG}: error: {explained}", file=sys.stderr)
        return explained.exit_code
    finally:
        if early:
            listing.close_early()  # those the settings did not use (fewer workers, or no helpers)


class _GuardedOutput:
    """Standard output whose write errors (a full disk: `migrate status > /dev/full`) are one line naming
    them, through main()'s UserError, not a traceback. A reader that left (| head) stays BrokenPipeError."""

    def __init__(self, stream):
        self._stream = stream

    def _guarded(self, call, *args):
        try:
            return call(*args)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise UserError(f"cannot write standard output ({exc.strerror or exc}); what it shows is incomplete: "
                            "free some space or send it elsewhere") from None

    def write(self, text: str) -> int:
        return self._guarded(self._stream.write, text)

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def entry() -> None:
    """The `migrate` command. Every command has closed its run file and its helpers when main() returns;
    tearing down the interpreter after a big run (hundreds of thousands of objects freed one by one) took
    ~50 ms more, for nothing, so the process leaves at once."""
    sys.stdout = _GuardedOutput(sys.stdout)
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # a reader that left (| head), or a stream closed already
            pass
        except UserError as exc:  # what was printed last did not reach standard output
            print(f"{PROG}: error: {exc}", file=sys.stderr)
            code = code or exc.exit_code
    os._exit(code)


if __name__ == "__main__":
    entry()
