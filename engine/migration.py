"""Migration: wires store, queues, coordinator and observer; the controller the CLI and console drive."""

from __future__ import annotations

import dataclasses
import functools
import gc
import os
import threading
import time
from collections import deque
from typing import Callable, Mapping


from engine.adapters.base import FSAdapter
from engine.adapters.local import LocalAdapter
from engine.config import another_version, continued, readable
from engine.coordinator import QueueCoordinator
from engine.counters import CopyCounters, SideCounters
from engine.errors import UserError
from engine.excludes import compile_excludes
from engine.fileview import copy_view, recorded_errors, traversal_views
from engine.governor import ListingGovernor
from engine.hotreload import SettingsWatcher
from engine.model import (
    ACTION_SKIP, DST, FOLDER, IN_PROGRESS, MTIME_NS_MAX, MTIME_NS_MIN, PENDING, SRC, SUCCESSFUL, Node,
    display, is_temp_name, join, name_in_temp, name_of, node_id, parent_of, temp_name_was_cut, temp_target,
)
from engine.listing import ListerPool, close_early
from engine.modes.copy import CopyMode
from engine.modes.traversal import TraversalMode
from engine.observer import Observer
from engine.queue import Queue
from engine.sealer import Sealer
from engine.settings import Settings
from engine.snapshot import (
    CopyView, ErrorView, GateView, LevelView, MigrationSnapshot, QueueView, Summary,
)
from engine.store import RunInfo, Store, out_of_memory
from engine.summary import summarize
from engine.threads import ThreadLimit, start_thread
from engine.validate import changed_roots, check_roots, folder_identity, same_folders
from engine.workers import BandwidthLimiter

FINISHED_PHASES = ("planned", "done")
ERRORS_KEPT = 200  # the latest failures a snapshot lists; the run file keeps them all
LIVE_SETTINGS = ("src_workers", "dst_workers", "copy_workers", "max_listing_workers", "bwlimit", "max_src_ahead",
                 "max_retries", "lease_timeout", "backoff_base", "backoff_cap")
# DuckDB's own, set on the open run file: a run stopped for want of memory is resumed with more
RUN_FILE_SETTINGS = ("duckdb_memory_limit", "duckdb_threads")


class Migration:
    """Thread-safe controller. Commands return at once; the engine's own threads do the work."""

    def __init__(self, store: Store, info: RunInfo, settings: Settings, src: FSAdapter, dst: FSAdapter,
                 dry_run: bool):
        self.store = store
        self.settings = settings
        self.src_root, self.dst_root = info.src_root, info.dst_root
        self.src, self.dst = src, dst
        self.dry_run = dry_run
        self.phase = info.phase
        self._stored_elapsed = info.elapsed_s
        self._started_at: float | None = None
        self._lock = threading.RLock()  # reentrant: a queue started under it may have a notice to tell
        self._thread: threading.Thread | None = None
        self._stop = False
        self._force = False
        self._paused = False
        self._listing_widened = False  # this traversal's listings were seen waiting on storage (engine.governor)
        self._retry_requested = False
        self.coordinator = QueueCoordinator(settings.max_src_ahead)
        self.counters = {SRC: SideCounters(), DST: SideCounters()}
        self.copy_counters = CopyCounters()
        self.limiter = BandwidthLimiter(settings.bwlimit)
        self.queues: dict[str, Queue] = {}
        self.finished_queues: list[Queue] = []  # every queue of this process, for inspection after a run
        # The failures the run file records (an opened run's, or a continued one's), then this process's.
        self.errors: deque[ErrorView] = deque(recorded_errors(store, ERRORS_KEPT), maxlen=ERRORS_KEPT)
        self.failed_count = store.dead_letter_count()
        # see snapshot(): the queues they were read for, and what the file said then
        self._file_views: tuple[dict, QueueView, QueueView, GateView, CopyView] | None = None
        self.copy_totals = (0, 0)  # what the copy had still to do when this process started it
        self._copy_before = CopyView()  # what the run file had copied already then (a resumed copy)
        self._found_before: dict[str, tuple[int, int]] = {}  # per side: the counts a retry's own finds add to
        self.message: str | None = None
        # called with what hot reload did to the settings file (the console shows `message` instead)
        self.on_settings_message: Callable[[str], None] | None = None
        # source entries that are neither folder, file nor symlink (FIFOs, sockets, devices): not migrated,
        # as rclone does; each is told to on_notice (the CLI prints it) and counted for the summary
        self.specials_skipped = 0
        self.on_notice: Callable[[str], None] | None = None
        self._told: set[str] = set()  # the notices _notify_once told already
        self.summary: Summary | None = summarize(store, info.elapsed_s, plan=info.phase == "planned") \
            if info.phase in FINISHED_PHASES else None
        self.observer = Observer(store, settings.observer_interval, self._metrics)
        self.excluded = compile_excludes(settings.exclude)
        self.fatal: str | None = None
        self.stopped_resumable = False  # fatal names what stopped a run that can be resumed once it is fixed
        self.fresh = False  # a run created now, not yet started
        self.start_notes: list[str] = []  # what create() decided that the operator should know
        # (exclude, where it came from): another exclude than this finished run's, given when its file was
        # opened (engine.config.apply_to_resumed_run); its plan would copy what that excludes
        self.exclude_now: tuple[list, str] | None = None
        # the settings the run file held when this process took the run up (None: a run started now): what a
        # key the settings file stops setting goes back to, mid-run (engine.hotreload), as in a resume
        self.continued_from: dict | None = None

    # construction ----------------------------------------------------------------------------------

    @classmethod
    def create(cls, db_path: str, src: str, dst: str, settings: Settings | None = None, dry_run: bool = False,
               src_adapter: FSAdapter | None = None, dst_adapter: FSAdapter | None = None,
               use_plan: bool = False, given: Mapping[str, str] | None = None) -> "Migration":
        """A new run, or the continuation of an unfinished run of the same pair in the same file.
        A finished run of the same pair is compared again from scratch, as rsync would; so is a dry run's
        plan, which would miss what changed since it was made, unless use_plan (copy it as it stands).
        given: the settings set by a file, a variable or a flag, and where (config.Loaded.given); a continued
        run keeps its stored values for the others, as a resume does (None: all of `settings` are given)."""
        settings = settings or Settings()
        if src_adapter is None:
            src, dst = check_roots(src, dst, db_path, writes=not dry_run)
        if use_plan and not os.path.exists(db_path):  # refused before a run file is made
            raise UserError(no_plan(db_path))
        store = Store.open(db_path, settings.duckdb_memory_limit, settings.duckdb_threads)
        try:
            store.require_writable()
            info = store.run_info()
            if info is not None and (info.src_root, info.dst_root) != (src, dst) and src_adapter is None \
                    and same_folders((info.src_root, info.dst_root), (src, dst)):
                src, dst = info.src_root, info.dst_root  # the same folders, reached through a symlink
            if info is not None and (info.src_root, info.dst_root) != (src, dst):
                raise UserError(f"'{db_path}' holds the run {display(info.src_root)} -> {display(info.dst_root)}, "
                                "not this pair; give a new --db path for a different pair")
            if info is not None and dry_run and not info.dry_run and info.phase in ("copy", "retry"):
                # past its first traversal a run has copied: continued, it copies on (a dry run's flag would
                # only relabel it), and turned into a plan it would count those copies as the plan's
                raise UserError(f"'{db_path}' holds a run that stopped after it began copying; a dry run cannot "
                                f"continue it: finish it with 'migrate resume --db {db_path}', or give the dry run "
                                "a new --db path")
            notes, continued_from = [], None
            stored_exclude = info.settings.get("exclude", []) if info is not None else []
            if use_plan and (info is None or info.phase != "planned"):  # asked for that plan, not another run
                raise UserError(no_plan(db_path))
            if use_plan and given is not None and "exclude" not in given:
                # the plan's own excludes, as a resume keeps them: the dry run's 'next' command names none
                settings = settings.model_copy(update={"exclude": stored_exclude})
            if use_plan and stored_exclude != settings.exclude:
                raise UserError(plan_excludes_otherwise(db_path, stored_exclude, settings.exclude))
            if info is not None and info.phase == "planned" and not dry_run:
                if stored_exclude != settings.exclude:  # its plan would copy what is excluded now
                    notes.append(f"the dry run's plan was made with exclude {stored_exclude}; comparing the trees "
                                 f"again with exclude {settings.exclude}")
                elif not use_plan:  # it would not see what changed since, on either side
                    notes.append("comparing the trees again, as the dry run did (its plan would miss what changed "
                                 "since); --use-plan copies that plan as it stands")
                if notes:
                    info = None  # compared again: a new run in this file
                else:
                    notes.append("copying the dry run's plan as it stands (what changed since is not seen)")
            if info is None or info.phase == "done" or (info.phase == "planned" and dry_run):
                local = all(a is None or isinstance(a, LocalAdapter) for a in (src_adapter, dst_adapter))
                store.start_run(src, dst, settings.model_dump(), dry_run, root_nodes(),
                                {SRC: folder_identity(src), DST: folder_identity(dst)} if local else {})
            else:
                refusal = another_version(info.settings, db_path)
                if refusal is not None:  # an unfinished run of another version: not taken up by this one
                    raise UserError(refusal)
                continued_from = info.settings
                if given is not None:  # what `migrate config show --db` says this run uses
                    settings = cls.continued_settings(db_path, info.settings, settings, given)
                    store.configure(settings.duckdb_memory_limit, settings.duckdb_threads)
                if stored_exclude != settings.exclude:
                    raise UserError(exclude_changed(db_path, stored_exclude, settings.exclude))
                store.set_settings(settings.model_dump())  # what this session runs with
                if info.dry_run != dry_run:
                    store.set_phase(info.phase, dry_run=dry_run)
            info = store.run_info()
        except BaseException:
            store.close()
            raise
        migration = cls(store, info, settings, src_adapter or LocalAdapter(src), dst_adapter or LocalAdapter(dst),
                        dry_run)
        migration.fresh = info.elapsed_s == 0.0 and info.phase == "traversal"
        migration.start_notes = notes
        migration.continued_from = continued_from
        return migration

    @classmethod
    def open(cls, db_path: str, settings: Settings | None = None) -> "Migration":
        """An existing run file: a finished run to look at, or an interrupted one to resume."""
        if not os.path.exists(db_path):
            raise UserError(f"run file '{db_path}' does not exist; start a run with SRC and DST")
        store = Store.open(db_path)
        info = store.run_info()
        if info is None:
            store.close()
            raise UserError(f"'{db_path}' holds no run yet; start one with SRC and DST")
        if settings is None:
            try:
                settings = continued(info.settings, db_path)
            except UserError:
                store.close()
                raise
        migration = cls(store, info, settings, LocalAdapter(info.src_root), LocalAdapter(info.dst_root),
                        info.dry_run)
        migration.continued_from = info.settings
        return migration

    @staticmethod
    def continued_settings(db_path: str, stored: dict, now: Settings, given: Mapping[str, str]) -> Settings:
        """A run's stored settings, but those given now (key -> where it was set); hot reload follows now's
        file and flags."""
        settings = continued(stored, db_path, {key: getattr(now, key) for key in given}, dict(given))
        settings._source_file, settings._flags = now.source_file, now.flags
        return settings

    # commands --------------------------------------------------------------------------------------

    @property
    def interrupted(self) -> bool:
        return self.phase not in FINISHED_PHASES and not self.running and self.summary is None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        with self._lock:
            if self.running:
                return
            self.store.require_writable()  # a run file opened to look at, taken up (R, t, c, resume, retry)
            if isinstance(self.src, LocalAdapter) and isinstance(self.dst, LocalAdapter):
                # The roots as they are now (a resume, a retry: the destination may have been replaced since,
                # by a symlink into the source, say), and taken afresh by the adapters, which keep them open.
                self._check_roots()
                for adapter in (self.src, self.dst):
                    adapter.recheck_root()
            self._stop = self._force = False  # a stopped run may be started again: that is a resume
            self._file_views = None  # the run is about to change the file
            self.fatal, self.stopped_resumable = None, False
            if self.phase in FINISHED_PHASES and not self._retry_requested \
                    and not (self.phase == "planned" and not self.dry_run):
                return
            if self._retry_requested:  # a retry lists only what failed: it finds on top of what the file has
                src_found, dst_found, _gate = traversal_views(self.store, self.phase, self.settings.max_src_ahead)
                self._found_before = {  # less what this process's counters have counted already
                    v.side: (v.files_discovered - self.counters[v.side].files_discovered,
                             v.folders_discovered - self.counters[v.side].folders_discovered)
                    for v in (src_found, dst_found)}
            self._started_at = time.monotonic()
            self.store.elapsed_clock = self.elapsed
            relax_garbage_collector()
            try:
                self._thread = start_thread(threading.Thread(target=self._drive_guarded, name="migration",
                                                             daemon=True))
            except ThreadLimit as exc:  # nothing ran: the file as it was, resumable once the limit allows
                self._started_at, self.store.elapsed_clock = None, None
                self._stopped_resumable(str(exc))
                raise

    def _take_up(self, what: str, undo: Callable[[], None] | None = None) -> None:
        """start() for a command that takes the run up (which checks the roots again); when it is refused
        (UserError), undo() puts back what the command changed, the console's status line keeps why
        ('<what> refused: ...'), and the refusal is raised."""
        try:
            self.start()
        except UserError as exc:
            if undo is not None:
                with self._lock:
                    undo()
            self.message = f"{what} refused: {exc}"
            raise

    def resume_from_db(self) -> None:
        self.message = "resuming from the run file"
        self._take_up("resume")

    def copy_plan(self) -> None:
        """Copy a finished dry run's plan as it stands, what `migrate run --use-plan` does: what changed on
        either side since the dry run is not seen (the copy still keeps a destination file newer than
        its source). UserError when there is no such plan, or the roots refuse (the file as it was)."""
        with self._lock:
            if self.running or self.phase != "planned":
                what = "the run is active" if self.running else f"this run's phase is {self.phase!r}"
                raise UserError(f"only a finished dry run's plan can be copied; {what}")
            if self.exclude_now is not None:  # as --use-plan would not copy it either
                raise UserError(plan_excludes_otherwise(self.store.path, self.settings.exclude, *self.exclude_now))
            self.store.require_writable()  # before the phase below is written, as start() would after it
            self.store.set_phase("planned", dry_run=False)
            self.dry_run = False
        planned, self.summary = self.summary, None
        self.message = "copying the dry run's plan as it stands (what changed since is not seen)"

        def still_the_dry_run() -> None:
            self.store.set_phase("planned", dry_run=True)
            self.dry_run, self.summary = True, planned
        self._take_up("copy", still_the_dry_run)

    def pause(self) -> None:
        with self._lock:
            self._paused = True
            for q in self.queues.values():
                q.pause()
        self.message = "paused: in-flight tasks finish, nothing new starts"

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            for q in self.queues.values():
                q.resume()
        self.message = "resumed"

    def retry(self) -> None:
        """Retry mode: failed and pending tasks at every depth run again, then the copy."""
        with self._lock:
            self._retry_requested = True
            running = self.running
        self.message = "retry mode: failed and pending tasks run again" if not running else \
            "retry mode requested: starts when the current phase ends"
        if not running:
            self.summary = None
            self._take_up("retry", lambda: setattr(self, "_retry_requested", False))

    def stop(self, force: bool = False) -> None:
        with self._lock:
            self._stop = True
            self._force = self._force or force
            for q in self.queues.values():
                q.stop(force)
        self.message = "stopping now" if force else "stopping: finishing in-flight tasks, then sealing"

    def wait(self, timeout: float | None = None) -> bool:
        t = self._thread
        if t is not None:
            t.join(timeout)
            return not t.is_alive()
        return True

    def close(self) -> None:
        self.wait(None if not self._force else 5)
        self.store.close()

    def apply_settings(self, changes: dict) -> list[str]:
        """Apply live-tunable settings now; returns the keys refused because they cannot change mid-run."""
        refused = [k for k in changes if k not in LIVE_SETTINGS and k not in RUN_FILE_SETTINGS]
        live = {k: v for k, v in changes.items() if k not in refused}
        for key, value in live.items():
            setattr(self.settings, key, value)
        s = self.settings
        if live.keys() & set(RUN_FILE_SETTINGS):
            self.store.configure(s.duckdb_memory_limit, s.duckdb_threads)
        self.limiter.rate = s.bwlimit
        self.coordinator.set_max_src_ahead(s.max_src_ahead)
        with self._lock:  # only a change of a count sets it: a bwlimit edit keeps a widened traversal wide
            for name, q in self.queues.items():
                if name == "copy" and "copy_workers" in live:
                    q.set_workers(s.copy_workers)
                elif name != "copy" and live.keys() & {f"{name}_workers", "max_listing_workers"}:
                    q.set_workers(self._traversal_workers(name))
        if live:
            self.message = "settings applied: " + ", ".join(f"{k}={readable(k, getattr(s, k))}" for k in live)
            if self.store.writable():  # else only looked at (start() refuses to run it): used, not stored
                self.store.set_settings(s.model_dump())
        return refused

    # the driver ------------------------------------------------------------------------------------

    def _on_error(self, side: str, phase: str, path: str, message: str, attempts: int) -> None:
        self.failed_count += 1
        self.errors.append(ErrorView(time.time(), side, phase, display(path), message, attempts))

    def _on_special(self, side: str, specials: tuple) -> None:
        self.specials_skipped += len(specials)  # under the SRC queue's lock, like every counter
        notices = [f"'{display(path)}' is {what}: not migrated (only folders, files and symlinks are)"
                   for path, what in specials]
        if self.on_notice is not None:
            for notice in notices:
                self.on_notice(notice)
        else:  # the console shows the message line
            self.message = f"{self.specials_skipped:,} special files not migrated so far; last: {notices[-1]}"

    def _on_stop_run(self, reason: str | None) -> None:
        """A task met what stops the whole run (the destination is full): stop and seal, resumable."""
        self._stopped_resumable(reason)
        self.stop()

    def _stopped_resumable(self, reason: str | None) -> None:
        self.fatal, self.stopped_resumable = reason, True
        self.fresh = False  # an interrupted run now, not a new one: the console's R takes it up
        self.message = f"stopped: {reason}; fix it and resume"

    def _drive_guarded(self) -> None:
        watcher = None
        try:
            self.observer.start()
            # follows migrate.toml while the run is active
            watcher = SettingsWatcher.for_migration(self, on_message=self.on_settings_message)
            self._drive()
        except ThreadLimit as exc:  # what ran was stopped and sealed on the way out
            self._stopped_resumable(str(exc))
        except UserError as exc:
            self.fatal = str(exc)
            self.message = str(exc)
        except Exception as exc:  # noqa: BLE001 - reported, never a silent dead thread
            self.fatal = str(out_of_memory(exc) or f"internal error: {exc!r}")
            self.message = self.fatal
        finally:
            if watcher is not None:
                watcher.stop()
            self.observer.stop()
            self.store.elapsed_clock = None
            self._stored_elapsed = self.elapsed()
            self._started_at = None
            if self.phase not in FINISHED_PHASES:
                self.store.set_phase(self.phase, elapsed_s=self._stored_elapsed)

    def _drive(self) -> None:
        phase = self.store.run_info().phase
        if self._retry_requested:
            self._retry_requested = False
            self._reset_for_retry()  # the file's phase becomes 'retry' with it
            phase = "retry"
        resuming_copy = phase == "copy"
        # Temporaries an interrupted copy left behind: DST's listings record those they find (the run file's
        # dst_temporaries); unless this process listed the whole DST itself, the copy also sweeps the
        # folders it has files left to copy in, for those of a copy interrupted after the listing
        sweep = not (self.fresh and phase == "traversal")
        while True:
            self.phase = phase
            if phase in ("traversal", "retry"):
                self._run_traversal(retry=phase == "retry")
                if self._stop:
                    return
                phase = "planned" if self.dry_run else "copy"
                self.store.set_phase(phase, elapsed_s=self.elapsed())
            elif phase == "planned" and not self.dry_run:
                phase = "copy"
                self.store.set_phase(phase)
            elif phase == "copy":
                self._run_copy(resuming_copy, sweep)
                if self._stop:
                    return
                phase = "done"
            if phase in FINISHED_PHASES:
                if self._retry_requested:
                    self._retry_requested = False
                    self._reset_for_retry()
                    phase = "retry"
                    continue
                self.phase = phase
                # the clock stops here: the summary, the file and every snapshot after say the same time
                self._stored_elapsed, self._started_at = self.elapsed(), None
                self.summary = summarize(self.store, self._stored_elapsed, plan=phase == "planned")
                self.store.set_phase(phase, elapsed_s=self._stored_elapsed)
                failed = self.summary.failed
                self.message = "dry run complete: nothing was written" if phase == "planned" else \
                    (f"migration finished, {failed:,} entries failed: retry copies them once their cause is fixed"
                     if failed else "nothing to copy: destination already up to date" if not self.summary.copied
                     else "migration complete")
                return

    def _reset_for_retry(self) -> None:
        """The file's failures go back to pending, its dead letters are deleted and its phase becomes 'retry'
        (one transaction): so are the failures listed here (one that fails again is listed again, counted once)."""
        self.store.reset_for_retry()
        self.errors.clear()
        self.failed_count = 0

    def _run_traversal(self, retry: bool) -> None:
        self.coordinator = QueueCoordinator(self.settings.max_src_ahead)
        sealer = Sealer(functools.partial(self.coordinator.record, "sealed"))
        s = self.settings
        queues, pools = {}, []
        for side, adapter, workers in ((SRC, self.src, s.src_workers), (DST, self.dst, s.dst_workers)):
            listers = ListerPool(self._notify_once) if s.list_processes and isinstance(adapter, LocalAdapter) else None
            if listers is not None:
                pools.append(listers)
            mode = TraversalMode(side, self.store, adapter, self.counters[side], self._on_error, sealer, retry,
                                 self.excluded, listers, self._on_special)
            queues[side] = Queue(side, mode, self.coordinator, s, workers, self._on_stop_run)
        self._listing_widened = False
        governor = None
        if pools:  # even when max_listing_workers is at the worker counts now: it may be raised live
            governor = ListingGovernor(lambda: [pid for listers in pools for pid in listers.pids()],
                                       functools.partial(self._widen_listing, queues))
            try:
                governor.start()
            except ThreadLimit:  # no thread to watch the listings with: they keep their counts
                governor = None
        try:
            self._run_queues(queues)
        finally:
            if governor is not None:
                governor.stop()
            for listers in pools:
                listers.close(wait=False)  # they exit on their own once their pipes close (~35 ms saved here)
            close_early()  # listing processes the CLI started ahead and no worker took: not needed any more
            sealer.close()  # every completed round committed before the phase moves on (raises a failed seal)

    def _traversal_workers(self, side: str) -> int:
        """A traversal queue's worker count: the side's own, or max_listing_workers once the listings were
        seen waiting on storage (whichever is more)."""
        s = self.settings
        own = s.src_workers if side == SRC else s.dst_workers
        return max(own, s.max_listing_workers) if self._listing_widened else own

    def _widen_listing(self, queues: dict[str, Queue]) -> None:
        """The listings wait on storage (engine.governor): more of them in flight from now on."""
        with self._lock:  # as apply_settings: a live edit of a count is not overwritten half-way
            if self._stop:
                return
            self._listing_widened = True
            widened = [q for q in queues.values()
                       if not q.finished and q.target_workers < self._traversal_workers(q.side)]
            for q in widened:
                q.set_workers(self._traversal_workers(q.side))
            if not widened:
                return
            counts = {q.side: q.target_workers for q in queues.values()}
            now = f"{counts[SRC]} listing workers per side" if counts[SRC] == counts[DST] else \
                f"{counts[SRC]} SRC and {counts[DST]} DST listing workers"
        self._notify(f"listings wait on storage: {now} now (max_listing_workers)")

    def _notify_once(self, notice: str) -> None:
        """_notify, unless told already (both sides' listing pools have the same to say)."""
        with self._lock:
            if notice in self._told:
                return
            self._told.add(notice)
        self._notify(notice)

    def _notify(self, notice: str) -> None:
        """Tell the operator: the CLI prints it (on_notice), the console shows it on the message line."""
        with self._lock:
            if not self._paused and not self._stop:  # "paused" and "stopping" stay on the line
                self.message = notice
        if self.on_notice is not None:
            self.on_notice(notice)

    def _check_roots(self) -> None:
        """The pair as it is now, as a new run checks it, and each root the folder the run file describes:
        a resume or retry (or a copy after a long traversal, paused maybe) must not take a destination moved
        away and made anew for the one it copied into, nor one made a symlink into the source."""
        check_roots(self.src_root, self.dst_root, None, writes=not self.dry_run)
        refusal = changed_roots(self.store.root_identities(), {SRC: self.src_root, DST: self.dst_root})
        if refusal is not None:
            raise UserError(refusal)

    def _run_copy(self, resuming: bool, sweep: bool) -> None:
        close_early()  # a copy resumed without a traversal lists nothing: the CLI's early listers go now
        if isinstance(self.src, LocalAdapter) and isinstance(self.dst, LocalAdapter):
            self._check_roots()
        if sweep:
            self._sweep_temporary_files()
        found = self.store.found_temporaries()
        for path in self._not_on_source(found):  # e.g. a run killed mid-file, started over
            try:
                self.dst.remove(path)
            except OSError:
                pass  # not ours to fail the run for: it stays, as it would have
        if found:
            self.store.forget_temporaries()
        if isinstance(self.dst, LocalAdapter):
            try:
                os.makedirs(self.dst_root, exist_ok=True)
            except OSError as exc:  # e.g. a parent made read-only since check_roots, or a read-only mount
                raise UserError(f"cannot create the destination '{display(self.dst_root)}' ({exc.strerror}); "
                                "fix that, then resume") from None
            if DST not in self.store.root_identities():  # made now, or there since the comparison began
                self.store.set_root_identities({DST: folder_identity(self.dst_root)})
        self._set_attributes(self.store.folders_to_open() + self._root_to_open())
        # this copy's own counts, as its totals are (a retry or a resume in this process copies again: what
        # the copies before it counted is in the file, and in _copy_before when this copy counts on from it)
        self.copy_counters = CopyCounters()
        self.copy_totals = (self.store.count(SRC, "copy_status IN ('pending', 'in_progress') AND depth > 0"),
                            self.store.sum_size("copy_status IN ('pending', 'in_progress') AND type = 'file'"))
        self._copy_before = copy_view(self.store, "copy") if resuming else CopyView()
        mode = CopyMode(self.store, self.src, self.dst, self.settings, self.copy_counters, self.limiter,
                        self._on_error, on_notice=self._notify_once)
        try:
            self._run_queues({"copy": Queue(SRC, mode, self.coordinator, self.settings, self.settings.copy_workers,
                                            self._on_stop_run)})
        finally:
            mode.close_copiers()  # a forced stop leaves without a seal, which closes them otherwise
        if not self._stop:
            restore = self.store.attributes_to_restore(self._made_with(mode.made_folders))
            self._set_attributes([change for change in restore if not mode.blocks(change[0])]
                                 + self._root_attributes())

    def _made_with(self, made: set[str]) -> Callable[[str, int], bool]:
        """Does a folder this copy made have the mode `wanted` already (then it is not set again)?

        mkdir gives a folder its mode less the umask (made_mode), but never the setuid or setgid bit from the
        mode: on Linux a new folder has setgid exactly when the folder it is made in has it. So a folder that
        wants either bit, or one made where setgid is inherited (under a destination folder that has it and
        was not made by this copy: a shared group folder, say), is not made with its mode and gets it set."""
        made_mode = self.dst.made_mode
        inherits: dict[str, bool] = {}  # a folder not made by this copy -> has setgid (or cannot be told)

        def setgid_inherited(path: str) -> bool:
            parent = parent_of(path)
            while parent in made:  # made by this copy: it has setgid only if it inherited it in turn
                parent = parent_of(parent)
            found = inherits.get(parent)
            if found is None:
                try:
                    there = self.dst.stat(parent)
                except OSError:
                    there = None
                found = inherits[parent] = there is None or bool(there.mode & 0o2000)
            return found

        return lambda path, wanted: (path in made and made_mode(wanted) == wanted and not wanted & 0o6000
                                     and not setgid_inherited(path))

    def _run_queues(self, queues: dict[str, Queue]) -> None:
        refused = None
        with self._lock:
            if self._stop:
                return
            self.queues = queues
            self.finished_queues.extend(queues.values())
            try:  # a loop and a worker for each queue before the rest: the last must not find no thread left
                for q in queues.values():
                    q.on_notice = self._notify  # each time: a later raise that falls short is news too
                    if self._paused:
                        q.pause()
                    q.start(workers=1)
                for q in queues.values():
                    q.start_workers()
            except ThreadLimit as exc:  # the queues started already stop and seal, as on Ctrl-C
                refused = exc
                for started in queues.values():
                    started.stop()
        for q in queues.values():
            q.join()
        if refused is not None:
            raise refused
        self.observer.tick()  # each queue's final numbers reach queue_stats before the next phase replaces it
        for q in queues.values():
            if q.error is not None:
                raise q.error

    def _sweep_temporary_files(self) -> None:
        """A copy interrupted by a crash may leave temporary files where files were being written."""
        for folder in self.store.pending_copy_folders():
            try:
                entries = self.dst.list(folder)
            except OSError:
                continue
            names = [join(folder, e.name) for e in entries if is_temp_name(e.name) and e.type != FOLDER]
            for path in self._not_on_source(names):
                self.dst.remove(path)

    def _not_on_source(self, temporaries: list[str]) -> list[str]:
        """Of names with the form of ours, those that are ours: written for a source file beside them
        (.NAME.<8 hex>.migrate-tmp beside the source's NAME) and not a source entry themselves. A file of
        the same form that is on the destination only (.notes.abcdef12.migrate-tmp with no 'notes'), or on
        the source too, is an entry like any other: never swept."""
        targets = {path: join(parent_of(path), temp_target(name_of(path))) for path in temporaries}
        on_source = self.store.source_paths(temporaries)
        # only a source file or symlink has temporaries written for it: '.docs.<8 hex>.migrate-tmp' beside a
        # source folder 'docs' is a destination entry like any other
        written_for = self.store.source_paths(list(targets.values()), files_only=True)
        # a NAME too long for the temporary's name was cut in it: such a target is known by its cut
        cut = {parent_of(path) for path in temporaries
               if targets[path] not in written_for and temp_name_was_cut(name_of(path))}
        written_for |= {join(folder, name_in_temp(name_of(path)))
                        for folder in cut for path in self.store.source_paths_in(folder, files_only=True)}
        return [path for path in temporaries if path not in on_source and targets[path] in written_for]

    def _root_to_open(self) -> list[tuple[str, None, int]]:
        """The destination root, when an earlier run gave it a source mode without owner rwx: opened for the
        copy as folders_to_open opens the others (the end sets the source's mode again)."""
        root = self.dst.stat("")
        if root is None or root.type != FOLDER or root.mode & 0o700 == 0o700:
            return []
        return [("", None, root.mode | 0o700)]

    def _root_attributes(self) -> list[tuple[str, int, int]]:
        """The source root's mtime and mode for the destination root, as `rsync -a SRC/ DST/` leaves it (the
        run file does not hold them: the roots are seeded, not listed)."""
        src, dst = self.src.stat(""), self.dst.stat("")
        if src is None or dst is None or not src.type == dst.type == FOLDER or \
                (src.mtime_ns, src.mode) == (dst.mtime_ns, dst.mode):
            return []
        return [("", src.mtime_ns, src.mode)]

    def _set_attributes(self, changes: list[tuple[str, int | None, int | None]]) -> None:
        """Folder and file attributes on DST, as rsync -a leaves them (Store.folders_to_open and
        attributes_to_restore). One that cannot be set (gone meanwhile, not ours) is left: a failure to
        set an attribute never fails the copy of the entry itself."""
        for path, mtime_ns, mode in changes:
            try:
                if mtime_ns in (MTIME_NS_MAX, MTIME_NS_MIN):  # the run file's limit: the date is further out
                    exact = self.src.stat(path, exact_mtime=True)
                    mtime_ns = exact.mtime_ns if exact is not None else mtime_ns
                self.dst.set_attributes(path, mtime_ns, mode)
            except OSError:
                pass

    # views -----------------------------------------------------------------------------------------

    def elapsed(self) -> float:
        started = self._started_at
        return self._stored_elapsed + (time.monotonic() - started if started is not None else 0.0)

    def _metrics(self) -> dict[str, dict]:
        out = {}
        with self._lock:
            queues = dict(self.queues)
        for name, q in queues.items():
            buffered, in_flight, workers = q.counts()
            m = {"round": q.round, "state": q.state, "mode": q.mode.name, "pending": buffered,
                 "in_progress": in_flight, "workers": workers, "completed": q.completed_total,
                 "failed": q.failed_total, "retried": q.retried_total, "expired_leases": q.expired_leases}
            if name == "copy":
                c = self.copy_counters
                m.update(folders=c.folders_created, files=c.files_copied, total=c.items, bytes=c.bytes,
                         skipped=c.skipped)
            else:
                c = self.counters[name]
                m.update(files_discovered_total=c.files_discovered, folders_discovered_total=c.folders_discovered,
                         total_discovered=c.files_discovered + c.folders_discovered)
            out[name] = m
        return out

    def _queue_view(self, side: str) -> QueueView:
        with self._lock:
            q = self.queues.get(side) or (self.queues.get("copy") if side == SRC else None)
        c = self.counters[side]
        rate = self.observer.rates[side].value
        if q is None:
            done = self.phase in FINISHED_PHASES or "copy" in self.queues
            return QueueView(side, "traversal", "completed" if done else "idle", 0, 0, 0, 0, 0, 0, 0, 0,
                             c.files_discovered, c.folders_discovered, 0.0, ())
        with q.lock:
            is_copy = q.mode.name == "copy"
            levels = []
            for depth in q.mode.cache.depths():
                level = q.mode.cache.level(depth)
                counts = level.copy_counts() if is_copy else level.status_counts()
                shown_depth = q.mode.view_round(depth)[0] if is_copy else depth
                levels.append(LevelView(shown_depth, len(level), counts.get(PENDING, 0),
                                        counts.get(IN_PROGRESS, 0), counts.get(SUCCESSFUL, 0),
                                        counts.get("failed", 0)))
            shown_round, copy_pass = q.mode.view_round(q.round)
            files_before, folders_before = self._found_before.get(side, (0, 0)) if q.mode.name == "retry" else (0, 0)
            view = QueueView(
                side, q.mode.name, q.state, shown_round, q.round_expected, q.round_completed,
                len(q.buffer) + len(q.delayed), len(q.in_flight), q._live_workers, q.completed_total,
                q.failed_total, files_before + c.files_discovered, folders_before + c.folders_discovered,
                0.0 if is_copy else rate,
                tuple(levels), self.coordinator.reason(side) if q.state == "waiting" else None, copy_pass)
        return view

    def snapshot(self) -> MigrationSnapshot:
        queues = self.queues  # once: each phase of the run puts a dict of its own queues here
        driving = bool(queues) or self.running or self.fresh
        file_copy = None
        if not driving or "copy" in queues:
            # A run file this process has not driven, or a copy whose traversal is over (run here or
            # before a resume): how the traversal went is what the file says, not this process's counters
            # or an idle coordinator's round 0. Read once per copy (start() forgets it too): read while a
            # retry's traversal had not yet replaced the copy before it, it would be that copy's; nothing
            # else writes the file while this process holds it.
            if self._file_views is None or self._file_views[0] is not queues:
                self._file_views = (queues, *traversal_views(self.store, self.phase, self.settings.max_src_ahead),
                                    copy_view(self.store, self.phase))
            _, src_view, dst_view, gate, file_copy = self._file_views
            if driving:  # SRC's column shows the live copy queue, with what the traversal found
                src_view = dataclasses.replace(self._queue_view(SRC), files_discovered=src_view.files_discovered,
                                               folders_discovered=src_view.folders_discovered)
                file_copy = None
        else:
            src_round, dst_round, src_done, dst_done, ahead = self.coordinator.state()
            gate = GateView(ahead, src_round, dst_round, src_done, dst_done,
                            src_done or dst_done or src_round <= dst_round + ahead,
                            src_done or src_round >= dst_round + 2,
                            self.coordinator.reason(SRC), self.coordinator.reason(DST))
            src_view, dst_view = self._queue_view(SRC), self._queue_view(DST)
        cc = self.copy_counters
        items_total, bytes_total = self.copy_totals
        rates = self.observer.rates
        items_rate, bytes_rate = rates["items"].value, rates["bytes"].value
        eta = None
        if self._paused:  # nothing moves once the tasks in hand are done: no rate, no time left to tell
            copying = self.queues.get("copy")
            if copying is None or copying.counts()[1] == 0:
                items_rate = bytes_rate = 0.0
        elif bytes_total and bytes_rate > 1:
            eta = max(0.0, (bytes_total - cc.bytes) / bytes_rate)
        elif items_total and items_rate > 0.1:
            eta = max(0.0, (items_total - cc.items) / items_rate)
        before = self._copy_before  # a resumed copy counts on from what the file had copied
        copy = file_copy or CopyView(
            before.items_done + cc.items, before.bytes_done + cc.bytes, before.items_done + items_total,
            before.bytes_done + bytes_total, before.folders_created + cc.folders_created,
            before.files_copied + cc.files_copied, before.skipped + cc.skipped, before.failed + cc.failed,
            items_rate, bytes_rate, eta)
        if self.running:
            state = "stopping" if self._stop else ("paused" if self._paused else "running")
        else:
            state = "finished" if self.phase in FINISHED_PHASES else "stopped"
        phase = self.phase if self.running or self.phase in FINISHED_PHASES else "interrupted"
        if self.fresh and not self.running and not self.queues:
            phase = "new"
        s = self.settings
        return MigrationSnapshot(
            phase=phase, state=state, src_root=self.src_root, dst_root=self.dst_root, db_path=self.store.path,
            dry_run=self.dry_run, taken_at=time.time(), elapsed_s=self.elapsed(),
            src=src_view, dst=dst_view, gate=gate, copy=copy,
            errors=tuple(self.errors), failed_count=self.failed_count, history=tuple(self.observer.history),
            summary=self.summary, message=self.message, stop_reason=self.fatal,
            settings=tuple((k, readable(k, getattr(s, k))) for k in LIVE_SETTINGS))


def no_plan(db_path: str) -> str:
    return (f"--use-plan: '{db_path}' holds no dry run's plan to copy; make one with migrate run -n, or leave "
            "out --use-plan to compare the trees and copy")


def plan_excludes_otherwise(db_path: str, made_with: list, now: list,
                            origin: str = "--exclude, migrate.toml or MIGRATE_EXCLUDE") -> str:
    """Why a dry run's plan is not copied under other excludes: it would copy what they exclude now."""
    return (f"the dry run's plan in '{db_path}' was made with exclude {made_with}, but {origin} gives {now}: "
            "it would copy what that excludes; drop that exclude, or compare the trees again (migrate run "
            "without --use-plan)")


def exclude_changed(db_path: str, stored: list, now: list, origin: str | None = None) -> str:
    """Why a started run refuses other excludes: what it listed so far was decided with its own."""
    where = origin or "--exclude, migrate.toml or MIGRATE_EXCLUDE"
    return (f"the run in '{db_path}' was started with exclude {stored}, but {where} gives {now}; a started run "
            f"cannot change what it excludes: drop that to continue it with its own, or start over with a new "
            "--db")


GC_GEN0_THRESHOLD = 50_000


def relax_garbage_collector() -> None:
    """A run allocates hundreds of thousands of long-lived objects (Nodes, column lists): at Python's
    default of a young collection every 700 allocations, the collector kept walking them, 12% of a 100k
    traversal's CPU. Young collections every 50,000 allocations still reclaim cycles (process-wide, kept)."""
    gen0, gen1, gen2 = gc.get_threshold()
    if 0 < gen0 < GC_GEN0_THRESHOLD:
        gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def root_nodes() -> tuple[Node, Node]:
    """Root nodes of both sides: depth 0, pending, deterministic ids."""
    src_root = Node(node_id(SRC, ""), None, "", 0, FOLDER, 0, 0, 0o755, PENDING, SUCCESSFUL, ACTION_SKIP)
    dst_root = Node(node_id(DST, ""), None, "", 0, FOLDER, 0, 0, 0o755, PENDING, None, ACTION_SKIP,
                    src_root.id)
    return src_root, dst_root
