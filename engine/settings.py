"""Every tunable of a run in one typed model, with defaults that serve a first run."""

from __future__ import annotations

import re

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)?\s*$", re.IGNORECASE)


def parse_size(value: object) -> int:
    """'50M' -> 52428800 (K/M/G/T are binary, as in rsync; KB/MB/GB are decimal); 0 means none."""
    if isinstance(value, (int, float)):
        return int(value)
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"{value!r} is not a size; use bytes or a number with K, M, G or T")
    number, unit, suffix = float(m.group(1)), m.group(2).lower(), (m.group(3) or "").lower()
    base = 1000 if suffix == "b" else 1024
    return int(number * base ** " kmgt".index(unit or " "))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MIGRATE_", extra="forbid", validate_assignment=True)

    # Threads: on a local disk the GIL makes more threads slower (see DESIGN.md); raise for slow mounts.
    src_workers: int = Field(1, ge=1, le=256, description="traversal workers listing SRC folders")
    dst_workers: int = Field(1, ge=1, le=256, description="traversal workers listing DST folders")
    copy_workers: int = Field(2, ge=1, le=256, description="workers copying files")
    max_src_ahead: int = Field(3, ge=1, le=1000, description="rounds SRC may run ahead of DST")
    buffer_size: int = Field(4096, ge=1, description="bound of each queue's pending buffer (tasks)")
    low_water: int = Field(1024, ge=0, description="refill the buffer when it falls to this many tasks")
    pull_batch: int = Field(2048, ge=1, description="tasks taken from the level cache per pull")
    max_retries: int = Field(3, ge=0, le=100, description="attempts after the first for transient errors")
    lease_timeout: float = Field(60.0, gt=0, description="seconds a task may run without a heartbeat")
    backoff_base: float = Field(0.5, ge=0, description="first retry delay in seconds (doubles each time)")
    backoff_cap: float = Field(30.0, ge=0, description="longest retry delay in seconds")
    bwlimit: int = Field(0, ge=0, description="file data bytes/s for the whole run, 0 = unlimited (e.g. 50M)")
    verify: bool = Field(False, description="hash source and copy (xxh3-128) before the rename")
    observer_interval: float = Field(0.2, gt=0, description="seconds between queue_stats samples")
    duckdb_memory_limit: str = Field("1GB", description="DuckDB memory_limit")
    duckdb_threads: int = Field(2, ge=1, le=64, description="DuckDB threads")
    exclude: list[str] = Field(default_factory=list, description="gitignore-style globs skipped on both sides")

    @field_validator("bwlimit", mode="before")
    @classmethod
    def _size(cls, value: object) -> int:
        return parse_size(value)

    @field_validator("low_water")
    @classmethod
    def _low_water_below_buffer(cls, value: int, info) -> int:
        size = info.data.get("buffer_size")
        if size is not None and value >= size:
            raise ValueError(f"must be below buffer_size ({size})")
        return value
