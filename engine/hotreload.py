"""Hot reload: while a run is active, follow its settings file and apply edits live.

A daemon thread watches the file's folder with watchfiles (editors save by writing a new file and renaming it
over the old one, so the file itself is not a stable thing to watch). On a change the file is read again
through the same layers as at start (defaults, or a continued run's stored settings < file < MIGRATE_* < the
run's flags), and the values that changed are handed to Migration.apply_settings: workers, bwlimit,
max_src_ahead and the retry settings change at once; the others are refused and said so in
migration.message, which the console shows.
A file that does not load (bad TOML, a bad value) is not applied: the message names the problem."""

from __future__ import annotations

import os
import threading

from watchfiles._rust_notify import RustNotify

from engine.config import load, readable
from engine.errors import UserError
from engine.threads import ThreadLimit, start_thread

DEBOUNCE_MS = 300  # group the writes of one save
STEP_MS = 50
TIMEOUT_MS = 1000


class SettingsWatcher:
    """SettingsWatcher(migration, path).start() ... .stop(). Thread-safe; stop() returns within ~0.1 s."""

    def __init__(self, migration, path: str, flags: dict | None = None, on_message=None):
        self.migration = migration
        self.path = os.path.abspath(path)
        self.flags = dict(flags if flags is not None else getattr(migration.settings, "flags", {}))
        self.on_message = on_message  # optional callable(str), e.g. a print for the headless CLI
        self.reloads = 0  # files read since start (applied or not): tests and diagnostics
        self.applied: list[dict] = []  # each reload's applied changes
        self.last_error: str | None = None
        self._file_values: dict = {}  # what the file set when last read
        self._origins: dict[str, str] = {}  # where each value came from then
        self._outranked: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last = self._load_dump()
        if self._last is None:  # the file does not load now: compare the next good one with the run
            self._last = migration.settings.model_dump()

    # lifecycle -------------------------------------------------------------------------------------

    @classmethod
    def for_migration(cls, migration, start: bool = True, on_message=None) -> "SettingsWatcher | None":
        """The watcher of a migration's settings file: the file its settings were loaded from, else
        migrate.toml beside its run file; None when there is no such file."""
        from engine.config import find_settings_file
        path = getattr(migration.settings, "source_file", None) or find_settings_file(None, migration.store.path)
        if path is None or not os.path.isfile(path):
            return None
        try:
            watcher = cls(migration, path, on_message=on_message)
            if start:
                watcher.start()
        except Exception as exc:  # noqa: BLE001 - e.g. no inotify watch left: the run goes on without it
            migration.message = f"settings file {path} not followed: {exc}"
            return None
        return watcher

    def start(self) -> "SettingsWatcher":
        """Watching has begun when this returns: an edit made after it is seen."""
        if self._thread is None:
            # created here, not in the thread, so that nothing saved after start() returns is missed
            notify = RustNotify([os.path.dirname(self.path)], False, False, 300, False, True)
            try:
                self._thread = start_thread(threading.Thread(target=self._run, args=(notify,),
                                                             name="settings-watch", daemon=True))
            except ThreadLimit:  # not followed then (for_migration says so)
                notify.close()
                raise
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # the thread ------------------------------------------------------------------------------------

    def _run(self, notify: RustNotify) -> None:
        folder = os.path.dirname(self.path)
        try:
            while not self._stop.is_set():
                try:
                    raw = notify.watch(DEBOUNCE_MS, STEP_MS, TIMEOUT_MS, self._stop)
                except RuntimeError:
                    # watchfiles fails for good on an event whose path is not valid UTF-8 (another file in
                    # this folder): listen anew, then read the file in case it changed meanwhile
                    if self._stop.wait(1.0):
                        break
                    fresh = RustNotify([folder], False, False, 300, False, True)
                    notify.close()
                    notify = fresh
                    self.reload()
                    continue
                if raw == "stop":
                    break
                if isinstance(raw, set) and any(os.path.abspath(path) == self.path for _, path in raw):
                    self.reload()
        except Exception as exc:  # noqa: BLE001 - never a silent dead thread: say so where the operator looks
            self._say(f"settings file no longer followed: {exc}")
        finally:
            notify.close()

    # reloading -------------------------------------------------------------------------------------

    def _load_dump(self) -> dict | None:
        try:
            loaded = load(config=self.path, overrides=self.flags)
            stored = getattr(self.migration, "continued_from", None)
            if stored is not None:  # a continued run: what the file does not set is the run's own, not the default
                loaded = loaded.over_run(stored, self.migration.store.path)
            dump = loaded.settings.model_dump()
        except UserError as exc:
            self.last_error = str(exc)
            return None
        self.last_error = None
        # keys the file set anew that a flag or a MIGRATE_* variable sets too
        self._outranked = sorted(k for k, v in loaded.file_values.items()
                                 if v != self._file_values.get(k) and loaded.origins.get(k) != loaded.file)
        self._file_values, self._origins = loaded.file_values, loaded.origins
        return dump

    def reload(self) -> dict:
        """Read the file again and apply what changed; returns the changes applied (also used by tests)."""
        self.reloads += 1
        name = os.path.basename(self.path)
        if not os.path.isfile(self.path):
            self._say(f"{name} was removed; the current settings stay")
            return {}
        new = self._load_dump()
        if new is None:
            self._say(f"{name} not applied: {self.last_error}")
            return {}
        current = self.migration.settings
        # what the file changed since it was last read, and that differs from what the run uses now
        changes = {k: v for k, v in new.items() if v != self._last.get(k) and v != getattr(current, k, v)}
        self._last = new
        # edited in the file, but a flag or a variable sets it: said, or the edit would seem lost
        outranked = [f"{k} ({self._origins[k]} outranks the file)" for k in self._outranked]
        if not changes and not outranked:
            return {}
        refused = self.migration.apply_settings(changes) if changes else []
        applied = {k: v for k, v in changes.items() if k not in refused}
        parts = []
        if applied:
            parts.append("applied " + ", ".join(f"{k}={readable(k, v)}" for k, v in applied.items()))
        if refused:  # said briefly: the console shows it on one line
            parts.append(f"kept {', '.join(refused)} until the next run (fixed while one runs)")
        if outranked:
            parts.append(f"kept {', '.join(outranked)}")
        self.applied.append(applied)
        self._say(f"{name} reloaded: " + "; ".join(parts))
        return applied

    def _say(self, text: str) -> None:
        self.migration.message = text
        if self.on_message is not None:
            try:
                self.on_message(text)
            except Exception:  # noqa: BLE001 - a printing problem must not stop the watcher
                pass

