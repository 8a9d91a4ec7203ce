"""Effective settings: defaults < settings file < MIGRATE_* environment < command line."""

from __future__ import annotations

from pydantic import ValidationError

from engine.errors import UserError
from engine.settings import Settings


def _one_line(exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "settings"
    return f"invalid setting '{key}': {err['msg']} (got {err.get('input')!r})"


def load_settings(config: str | None = None, db_path: str | None = None, overrides: dict | None = None) -> Settings:
    try:
        return Settings(**(overrides or {}))
    except ValidationError as exc:
        raise UserError(_one_line(exc)) from None


def describe_settings(config: str | None = None, db_path: str | None = None, overrides: dict | None = None) -> str:
    settings = load_settings(config, db_path, overrides)
    return "\n".join(f"{k} = {v!r}" for k, v in settings.model_dump().items())
