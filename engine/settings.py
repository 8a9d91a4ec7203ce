"""Every tunable of a run in one typed model, with defaults that serve a first run.

Precedence, lowest first: the defaults below < a settings file (TOML) < MIGRATE_* environment variables <
command-line flags. pydantic-settings merges the layers (settings_customise_sources); engine/config.py finds
the file, names where each value came from and turns validation errors into one line."""

from __future__ import annotations

import json
import math
import re
from contextvars import ContextVar
from typing import Annotated

from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, TomlConfigSettingsSource

from engine.excludes import compile_excludes
from engine.listing import DEFAULT_TRAVERSAL_WORKERS

# Below this even a small run's statements fail (1-4 MB did; a 100k dry run needs more than 16 MB).
MIN_DUCKDB_MEMORY, MIN_DUCKDB_MEMORY_SHOWN = int(30.5 * 2**20), "32MB"  # as DuckDB shows 32MB: '30.5 MiB'
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)?\s*$", re.IGNORECASE)


def parse_size(value: object) -> int:
    """'50M' -> 52428800 (K/M/G/T are binary, as in rsync; KB/MB/GB are decimal); 0 means none."""
    if isinstance(value, bool):  # a bool is an int to Python: 'bwlimit = true' was 1 byte/s
        raise ValueError(f"{str(value).lower()} is not a size; use bytes or a number with K, M, G or T")
    if isinstance(value, float) and not math.isfinite(value):  # TOML's inf and nan: int() raised
        raise ValueError(f"{value} is not a size; use bytes or a number with K, M, G or T (0 = unlimited)")
    if isinstance(value, (int, float)):
        number = value
    else:
        m = _SIZE.match(str(value))
        if not m:
            raise ValueError(f"{value!r} is not a size; use bytes or a number with K, M, G or T")
        number, unit, suffix = float(m.group(1)), m.group(2).lower(), (m.group(3) or "").lower()
        base = 1000 if suffix == "b" else 1024
        number *= base ** " kmgt".index(unit or " ")
    size = int(number)
    if size == 0 and number != 0:  # 0.5 (or -0.5) bytes would be 0: no limit at all, the opposite of what was asked
        raise ValueError(f"{value!r} is less than 1 byte; give at least 1 (0 means none), e.g. 0.5M")
    return size


def parse_list(value: object) -> object:
    """A list setting from text: a JSON array ('["*.tmp", "cache/"]') or comma-separated ('*.tmp,cache/')."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if text.startswith("["):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"not a JSON array ({exc.msg}); use a JSON array or comma-separated values") from None
    return [part.strip() for part in text.split(",") if part.strip()]


# The settings file of the Settings being built now (None: no file). A context variable, not a class
# attribute, so that two threads can load settings from different files at once.
_settings_file: ContextVar[str | None] = ContextVar("migrate_settings_file", default=None)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MIGRATE_", extra="forbid", validate_assignment=True)

    # Where these values came from, for hot reload (engine/hotreload.py): the settings file and the
    # command-line values that outrank it. Not settings themselves: not dumped, not stored in the run file.
    _source_file: str | None = PrivateAttr(default=None)
    _flags: dict = PrivateAttr(default_factory=dict)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        # first wins: keyword arguments (the command line) > MIGRATE_* variables > the settings file
        return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=_settings_file.get())

    @classmethod
    def load(cls, settings_file: str | None = None, **flags) -> "Settings":
        """defaults < settings_file < MIGRATE_* environment < flags. Raises pydantic's ValidationError,
        tomllib.TOMLDecodeError or OSError; engine.config.load_settings makes those one line."""
        token = _settings_file.set(settings_file)
        try:
            settings = cls(**flags)
        finally:
            _settings_file.reset(token)
        settings._source_file, settings._flags = settings_file, dict(flags)
        return settings

    @property
    def source_file(self) -> str | None:
        """The settings file these values were loaded from (None: none, or built directly)."""
        return self._source_file

    @property
    def flags(self) -> dict:
        """The command-line values given when these settings were loaded (they outrank the file)."""
        return dict(self._flags)

    # A traversal worker is a thread waiting on its own listing process (list_processes): two per side keep
    # both cores busy (100k dry run 2.6 s, against 2.85 s with one and 2.75 s with three). Listing in
    # this process instead, more threads only take turns on the GIL (bench/LOG.md): use 1 there.
    src_workers: int = Field(DEFAULT_TRAVERSAL_WORKERS, ge=1, le=256, description="traversal workers listing SRC folders")
    dst_workers: int = Field(DEFAULT_TRAVERSAL_WORKERS, ge=1, le=256, description="traversal workers listing DST folders")
    # Raised to this once the listing processes are seen waiting on storage (engine.governor): more listings
    # in flight keep a cold disk or a network mount busy, where on a warm cache they only compete for cores.
    max_listing_workers: int = Field(8, ge=1, le=256, description="traversal workers per side once listings "
                                     "wait on storage (each side: the larger of its own count and this)")
    list_processes: bool = Field(True, description="list local folders in helper processes, one per "
                                 "traversal worker: off this process's GIL, on another core")
    copy_processes: bool = Field(True, description="copy small files between local disks in helper "
                                 "processes, one per copy worker: off this process's GIL")
    copy_workers: int = Field(2, ge=1, le=256, description="workers copying files")
    max_src_ahead: int = Field(3, ge=1, le=1000, description="rounds SRC may run ahead of DST")
    buffer_size: int = Field(4096, ge=1, le=1_000_000, description="bound of each queue's pending buffer (tasks)")
    low_water: int = Field(1024, ge=0, le=1_000_000, description="refill the buffer when it falls to this many "
                           "tasks (default: a quarter of buffer_size)")
    pull_batch: int = Field(2048, ge=1, le=1_000_000, description="tasks taken from the level cache per pull")
    max_retries: int = Field(3, ge=0, le=100, description="attempts after the first for transient errors")
    lease_timeout: float = Field(60.0, gt=0, le=86_400, description="seconds a task may run without a heartbeat")
    backoff_base: float = Field(0.5, ge=0, le=3600, description="first retry delay in seconds (doubles each time)")
    backoff_cap: float = Field(30.0, ge=0, le=86_400, description="longest retry delay in seconds")
    bwlimit: int = Field(0, ge=0, description="file data bytes/s for the whole run, 0 = unlimited (e.g. 50M)")
    verify: bool = Field(False, description="hash source and copy (xxh3-128) before the rename")
    observer_interval: float = Field(0.2, gt=0, le=60, description="seconds between queue_stats samples")
    duckdb_memory_limit: str = Field("1GB", description="DuckDB memory_limit")
    # DuckDB works inside seals (a level's inserts and updates) beside the engine's own workers, which keep
    # the cores busy: a second DuckDB thread cost coordination CPU and bought no speed (100k dry run 2.01 ->
    # 1.96 s, 20k copy 2.60 -> 2.36 s, peak RSS -20 MB, on 2 cores)
    duckdb_threads: int = Field(1, ge=1, le=64, description="DuckDB threads")
    # NoDecode: MIGRATE_EXCLUDE is parsed by _list below (JSON array or comma-separated), not as JSON only
    exclude: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="gitignore-style globs skipped on both sides "
        "(MIGRATE_EXCLUDE: comma-separated or a JSON array)")

    @field_validator("bwlimit", mode="before")
    @classmethod
    def _size(cls, value: object) -> int:
        return parse_size(value)

    @field_validator("exclude", mode="before")
    @classmethod
    def _list(cls, value: object) -> object:
        return parse_list(value)

    @field_validator("exclude")
    @classmethod
    def _globs_compile(cls, value: list[str]) -> list[str]:
        # a glob whose [...] is no valid character class (e.g. '[z-a]') fails only when a run compiles it:
        # found here, before a run file is made
        for pattern in value:
            try:
                compile_excludes([pattern])
            except re.error as exc:
                raise ValueError(f"{pattern!r} is not a valid glob ({exc.msg}); check its [...]") from None
        return value

    @field_validator("duckdb_memory_limit")
    @classmethod
    def _memory_limit(cls, value: str) -> str:
        # DuckDB is the judge of its own setting, for a value given. Settings validate their defaults too, and
        # the check opens a DuckDB instance: ~25 ms of every command's start, for a default known to be good.
        if value == cls.model_fields["duckdb_memory_limit"].default:
            return value
        import duckdb
        too_small = ValueError(f"below the {MIN_DUCKDB_MEMORY_SHOWN} a run file needs; use e.g. 1GB, 512MB or 50%")
        try:
            con = duckdb.connect(config={"memory_limit": value})
            try:
                shown = con.execute("SELECT current_setting('memory_limit')").fetchone()[0]  # e.g. '15.2 MiB'
            finally:
                con.close()
        except duckdb.OutOfMemoryException:
            raise too_small from None
        except duckdb.Error as exc:
            reason = str(exc).partition(": ")[2] or str(exc)
            raise ValueError(f"not a memory size DuckDB takes ({reason}); use e.g. 1GB, 512MB or 50%") from None
        try:
            size = parse_size(shown.removesuffix(" bytes"))
        except ValueError:  # PiB and up: not too small
            return value
        if size < MIN_DUCKDB_MEMORY:
            raise too_small
        return value

    @model_validator(mode="before")
    @classmethod
    def _low_water_follows_buffer(cls, data: object) -> object:
        """low_water not given is a quarter of buffer_size (1024 of the default 4096): `--buffer-size 800`
        alone is a whole setting, not a clash with a default that only fits the default buffer."""
        if isinstance(data, dict) and "low_water" not in data and "buffer_size" in data:
            try:
                data = {**data, "low_water": int(data["buffer_size"]) // 4}
            except (TypeError, ValueError):
                pass  # buffer_size's own validation names it
        return data

    @field_validator("low_water")
    @classmethod
    def _low_water_below_buffer(cls, value: int, info) -> int:
        size = info.data.get("buffer_size")
        if size is not None and value >= size:
            raise ValueError(f"must be below buffer_size ({size})")
        return value
