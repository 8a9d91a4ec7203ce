"""Effective settings: defaults < settings file < MIGRATE_* environment < command line.

pydantic-settings does the merging (Settings.settings_customise_sources). This module finds the settings
file, says where each value came from, and turns every kind of bad input (a flag, a variable, a value or
key in the file, a TOML syntax error) into one line naming the key and where it was given."""

from __future__ import annotations

import difflib
import json
import os
from dataclasses import dataclass, field
from typing import Callable

from pydantic import ValidationError
from pydantic_settings import EnvSettingsSource, SettingsError, TomlConfigSettingsSource

from engine.errors import UserError
from engine.settings import Settings

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pydantic-settings reads TOML with tomli there
    import tomli as tomllib  # type: ignore[no-redef]

SETTINGS_FILE_NAME = "migrate.toml"
DEFAULT = "default"


def find_settings_file(config: str | None = None, db_path: str | None = None) -> str | None:
    """The settings file to read: --config FILE (which must exist), else migrate.toml beside the run file."""
    if config:
        if not os.path.isfile(config):
            what = "is a folder" if os.path.isdir(config) else "does not exist"
            raise UserError(f"settings file '{config}' {what}; give the path of a TOML file to --config")
        return os.path.abspath(config)
    if db_path:
        beside = os.path.join(os.path.dirname(os.path.abspath(db_path)), SETTINGS_FILE_NAME)
        if os.path.isfile(beside):
            return beside
    return None


def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def env_name(key: str) -> str:
    """The MIGRATE_* variable that sets key, as spelled in the environment (the match ignores case)."""
    wanted = f"migrate_{key}"
    return next((k for k in os.environ if k.lower() == wanted), wanted.upper())


@dataclass
class Loaded:
    """Effective settings and, per key, where the value came from: 'default', the settings file's path,
    a MIGRATE_* variable's name, or a --flag."""

    settings: Settings
    file: str | None
    origins: dict[str, str] = field(default_factory=dict)

    run_file: str | None = None  # set by over_run: the run file whose stored settings fill the defaults
    file_values: dict = field(default_factory=dict)  # what the settings file sets, outranked or not

    def given(self) -> dict[str, str]:
        """Where each value set by a file, a variable or a flag came from (the others are defaults)."""
        return {k: origin for k, origin in self.origins.items() if origin != DEFAULT}

    def explicit(self) -> dict:
        """The values set by a file, a variable or a flag (not left at their defaults)."""
        return {k: getattr(self.settings, k) for k in self.given()}

    def over_run(self, stored: dict, run_file: str) -> "Loaded":
        """What a resume of the run in run_file would use: its stored settings, except what is set now."""
        settings = continued(stored, run_file, self.explicit(), self.given())
        # a stored value not kept (low_water following a buffer given now) is the default's rule, as in a new run
        origins = {k: f"run file {run_file}" if origin == DEFAULT and k in stored
                   and stored[k] == getattr(settings, k) else origin for k, origin in self.origins.items()}
        return Loaded(settings, self.file, origins, run_file, self.file_values)


def continued(stored: dict, run_file: str, now: dict | None = None, given: dict[str, str] | None = None) -> Settings:
    """A run's settings as its file stores them, but the values `now` (set where `given` says); UserError (one
    line) when this version cannot take them, naming the value at fault where it was set."""
    refusal = another_version(stored, run_file)
    if refusal is not None:
        raise UserError(refusal)
    given, now = given or {}, now or {}
    if "buffer_size" in now and "low_water" not in now and "buffer_size" in stored \
            and stored.get("low_water") == _quarter(stored["buffer_size"]):
        # the run's low_water is the one a buffer brings (the default 1024 of 4096 too): it follows the buffer
        # given now, as it would in a new run, rather than clash with it
        stored = {k: v for k, v in stored.items() if k != "low_water"}
    try:
        return Settings(**{**stored, **now})
    except ValidationError as exc:
        reason = validation_line(exc, {**dict.fromkeys(stored, f"run file {run_file}"), **given}, None)
        loc = exc.errors()[0]["loc"]
        # a value given now that does not go with the stored ones (a stored low_water with a buffer given now)
        if loc and (loc[0] in given or (loc[0] == "low_water" and "buffer_size" in given)):
            raise UserError(f"{reason}; the run's other settings are those stored in '{run_file}'") from None
        raise UserError(f"the settings stored in '{run_file}' are invalid: {reason}") from None


def _quarter(value: object) -> int | None:
    try:
        return int(value) // 4
    except (TypeError, ValueError):
        return None


def _not_toml(path: str, exc: ValueError) -> UserError:
    if isinstance(exc, UnicodeDecodeError):  # TOML is UTF-8 text
        byte = exc.object[exc.start:exc.start + 1]
        return UserError(f"settings file '{path}' is not valid TOML: not UTF-8 text (byte 0x{byte.hex()} at "
                         f"offset {exc.start}); save it as UTF-8")
    return UserError(f"settings file '{path}' is not valid TOML: {exc}")


def _read_file(path: str | None) -> dict:
    if path is None:
        return {}
    try:
        return TomlConfigSettingsSource(Settings, toml_file=path)()
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise _not_toml(path, exc) from None
    except OSError as exc:
        raise UserError(f"cannot read settings file '{path}': {exc.strerror or exc}") from None


def _read_env() -> dict:
    try:
        return EnvSettingsSource(Settings)()
    except SettingsError as exc:  # a MIGRATE_* value pydantic-settings could not even parse
        raise UserError(f"invalid MIGRATE_* environment variable: {' '.join(str(exc).split())}") from None


def _origins(file: str | None, file_values: dict, env_values: dict, flags: dict) -> dict[str, str]:
    origins = {}
    for key in Settings.model_fields:
        if key in flags:
            origins[key] = flag_name(key)
        elif key in env_values:
            origins[key] = env_name(key)
        elif key in file_values:
            origins[key] = file
        else:
            origins[key] = DEFAULT
    return origins


def _shown(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def another_version(stored: dict, run_file: str) -> str | None:
    """Why a run file's stored settings come from another version of migrate (a setting unknown here), or
    None: such a file is gone on with by the version that wrote it, whatever command opens it."""
    unknown = sorted(set(stored) - set(Settings.model_fields))
    if not unknown:
        return None
    return (f"'{run_file}' was written by another version of migrate (its setting '{unknown[0]}' is unknown "
            "here): go on with the version that wrote it")


def validation_line(exc: ValidationError, origins: dict[str, str], file: str | None) -> str:
    errors = exc.errors()
    err = errors[0]
    key = ".".join(str(p) for p in err["loc"]) or "settings"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(key.replace("-", "_"), list(Settings.model_fields), n=1)
        hint = f"did you mean '{close[0]}'?" if close else "'migrate config show' lists the keys"
        return f"unknown setting '{key}' in {file or 'the settings'} ({hint}){more}"
    origin = origins.get(err["loc"][0] if err["loc"] else "", DEFAULT)
    where = "the default" if origin == DEFAULT else \
        (f"settings file {origin}" if origin == file else origin)
    msg = " ".join(str(err["msg"]).split())
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    return f"invalid setting '{key}' from {where}: {msg} (got {_shown(err.get('input'))}){more}"


def load(config: str | None = None, db_path: str | None = None, overrides: dict | None = None) -> Loaded:
    """Effective settings of the layers, with the origin of each value. UserError (one line) when bad."""
    flags = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = [k for k in flags if k not in Settings.model_fields]
    if unknown:
        raise UserError(f"unknown setting '{unknown[0]}'")
    file = find_settings_file(config, db_path)
    file_values = _read_file(file)
    origins = _origins(file, file_values, _read_env(), flags)
    try:
        settings = Settings.load(file, **flags)
    except ValidationError as exc:
        raise UserError(validation_line(exc, origins, file)) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:  # the file changed between the two reads
        raise _not_toml(file, exc) from None
    except SettingsError as exc:
        raise UserError(f"invalid settings: {' '.join(str(exc).split())}") from None
    return Loaded(settings, file, origins, file_values=file_values)


def load_settings(config: str | None = None, db_path: str | None = None, overrides: dict | None = None) -> Settings:
    return load(config, db_path, overrides).settings


def explicit_settings(config: str | None = None, db_path: str | None = None, overrides: dict | None = None) -> dict:
    """Only the values a settings file, a MIGRATE_* variable or a flag sets (validated): what a resume
    applies on top of the settings stored in the run file."""
    return load(config, db_path, overrides).explicit()


# MIGRATE_* variables that are not settings: the crash points of the tests, the console's debug switch and
# the benchmarks' own
_NOT_SETTINGS = ("MIGRATE_CRASH_AT", "MIGRATE_TUI_DEBUG", "MIGRATE_BENCH_")


def unknown_variables() -> list[str]:
    """A note for each MIGRATE_* variable that names no setting (pydantic-settings ignores them): a
    misspelt MIGRATE_BWLIMT would otherwise leave the run unlimited in silence."""
    notes = []
    for name in sorted(os.environ):
        upper = name.upper()
        key = upper.removeprefix("MIGRATE_").lower()
        if upper.startswith("MIGRATE_") and key not in Settings.model_fields and not upper.startswith(_NOT_SETTINGS):
            close = difflib.get_close_matches(key, list(Settings.model_fields), n=1)
            hint = f"did you mean {env_name(close[0])}?" if close else "'migrate config show' lists the settings"
            notes.append(f"{name} is not a setting ({hint}); ignored")
    return notes


def apply_to_resumed_run(migration, loaded: Loaded, note: Callable[[str], None]) -> None:
    """A resume keeps the run's stored settings except what a settings file, a MIGRATE_* variable or a flag
    sets now; what cannot change for a run already started is kept, and note() is told."""
    from engine.migration import FINISHED_PHASES, exclude_changed
    changes = {k: v for k, v in loaded.explicit().items() if getattr(migration.settings, k) != v}
    if "exclude" in changes and migration.phase in FINISHED_PHASES:  # looked at, or retried: kept as it was
        now = changes.pop("exclude")
        note(f"exclude {format_value(now)} from {loaded.origins['exclude']} is not this "
             f"finished run's ({format_value(migration.settings.exclude)}); a new run would use it")
        migration.exclude_now = (now, loaded.origins["exclude"])
    if "exclude" in changes:  # what was listed so far was decided with the run's own excludes
        migration.close()
        raise UserError(exclude_changed(migration.store.path, migration.settings.exclude, changes["exclude"],
                                        loaded.origins["exclude"]))
    refused = migration.apply_settings(changes) if changes else []
    for key in refused:
        kept = format_value(getattr(migration.settings, key))
        note(f"'{key}' cannot change for a run already started; keeping {kept} ({loaded.origins[key]} says "
             f"{format_value(changes[key])})")
    # hot reload (engine.hotreload) follows the same file, under the same flags
    migration.settings._source_file, migration.settings._flags = loaded.file, flags_of(loaded)


def flags_of(loaded: Loaded) -> dict:
    """The values given as command-line flags."""
    return {k: getattr(loaded.settings, k) for k, origin in loaded.origins.items() if origin.startswith("--")}


def readable(key: str, value) -> str:
    """A setting as an operator reads it: bwlimit in MiB/s, durations in seconds."""
    if key == "bwlimit":
        if not value:
            return "unlimited"
        unit, size = next((u, s) for u, s in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1))
                          if value >= s)
        return f"{value / size:.4g} {unit}/s"
    if key in ("lease_timeout", "backoff_base", "backoff_cap"):
        return f"{value:g}s"
    return str(value)


def format_value(value: object) -> str:
    """A value as it would be written in migrate.toml."""
    return json.dumps(value, ensure_ascii=False)


def describe(loaded: Loaded) -> str:
    if loaded.file:
        head = f"settings file: {loaded.file}"
    else:
        head = f"settings file: none (give --config FILE, or put {SETTINGS_FILE_NAME} beside the --db file)"
    if loaded.run_file:
        head += (f"\nrun file: {loaded.run_file} (a resume runs with these: the values the run stored, "
                 "except those a settings file, a MIGRATE_* variable or a flag sets now)")
    rows = [(key, format_value(getattr(loaded.settings, key)), loaded.origins[key])
            for key in Settings.model_fields]
    kw = max(len(r[0]) for r in rows)
    vw = min(24, max(len(r[1]) for r in rows))
    lines = [head, f"{'setting':<{kw}}  {'value':<{vw}}  from"]
    lines += [f"{key:<{kw}}  {value:<{vw}}  {origin}" for key, value, origin in rows]
    return "\n".join(lines)


def describe_settings(config: str | None = None, db_path: str | None = None, overrides: dict | None = None) -> str:
    return describe(load(config, db_path, overrides))
