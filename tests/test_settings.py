"""Settings: defaults < settings file < MIGRATE_* environment < flags, through the real load path and the
real CLI; `config show` names each value's source; every kind of bad input is one line, exit 2, no file."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from engine import cli
from engine.config import describe, find_settings_file, load
from engine.errors import UserError
from engine.settings import Settings
from engine.store import Store


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No MIGRATE_* setting from the outer environment leaks into these tests."""
    for key in Settings.model_fields:
        monkeypatch.delenv(f"MIGRATE_{key.upper()}", raising=False)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def small_tree(root: Path, files: int = 12) -> Path:
    (root / "sub").mkdir(parents=True)
    for i in range(files):
        (root / ("sub" if i % 2 else "") / f"f{i}.txt").write_bytes(b"x" * i)
    (root / "skip.tmp").write_bytes(b"tmp")
    return root


FILE = 'src_workers = 2\ncopy_workers = 3\nmax_retries = 5\nbwlimit = "1M"\nexclude = ["*.tmp"]\n'


def test_each_layer_wins_over_the_one_below_through_the_load_path(tmp_path, monkeypatch):
    db = tmp_path / "run.duckdb"
    toml = write(tmp_path / "migrate.toml", FILE)
    monkeypatch.setenv("MIGRATE_COPY_WORKERS", "4")
    monkeypatch.setenv("MIGRATE_MAX_RETRIES", "6")
    loaded = load(db_path=str(db), overrides={"max_retries": "7"})
    s = loaded.settings
    assert s.dst_workers == 2                  # default: nothing sets it
    assert s.src_workers == 2                  # file > default
    assert s.copy_workers == 4                 # env > file
    assert s.max_retries == 7                  # flag > env > file
    assert s.bwlimit == 1 << 20 and s.exclude == ["*.tmp"]
    assert loaded.file == str(toml)
    assert loaded.origins["dst_workers"] == "default"
    assert loaded.origins["src_workers"] == str(toml)
    assert loaded.origins["copy_workers"] == "MIGRATE_COPY_WORKERS"
    assert loaded.origins["max_retries"] == "--max-retries"
    assert loaded.explicit() == {"src_workers": 2, "copy_workers": 4, "max_retries": 7, "bwlimit": 1 << 20,
                                 "exclude": ["*.tmp"]}
    # the hot-reload watcher follows the same file under the same flags
    assert s.source_file == str(toml) and s.flags == {"max_retries": "7"}


def test_config_flag_replaces_the_file_beside_the_run_file(tmp_path):
    write(tmp_path / "migrate.toml", "src_workers = 3\n")
    other = write(tmp_path / "other.toml", "dst_workers = 5\n")
    loaded = load(config=str(other), db_path=str(tmp_path / "run.duckdb"))
    assert (loaded.settings.src_workers, loaded.settings.dst_workers) == (2, 5)
    assert find_settings_file(None, str(tmp_path / "elsewhere" / "run.duckdb")) is None


def parse_show(out: str) -> tuple[str, dict[str, tuple[str, str]]]:
    """(the head: every line above the table, joined), {key: (value, origin)}"""
    lines = out.strip().splitlines()
    table = next(i for i, line in enumerate(lines) if line.startswith("setting "))
    rows = {}
    for line in lines[table + 1:]:
        key, value, origin = re.split(r"\s{2,}", line.strip(), maxsplit=2)
        rows[key] = (value, origin)
    return "\n".join(lines[:table]), rows


def test_config_show_names_the_source_of_each_value(tmp_path, monkeypatch, capsys):
    db = tmp_path / "run.duckdb"
    toml = write(tmp_path / "migrate.toml", FILE)
    monkeypatch.setenv("MIGRATE_COPY_WORKERS", "4")
    monkeypatch.setenv("MIGRATE_EXCLUDE", "*.bak, cache/")  # comma-separated form
    monkeypatch.setenv("MIGRATE_MAX_RETRIES", "6")  # the flag below wins
    code, out, err = run_cli(capsys, "config", "show", "--db", str(db), "--max-retries", "7")
    assert code == 0, err
    head, rows = parse_show(out)
    assert head == f"settings file: {toml}"
    assert rows["dst_workers"] == ("2", "default")
    assert rows["src_workers"] == ("2", str(toml))
    assert rows["bwlimit"] == (str(1 << 20), str(toml))
    assert rows["copy_workers"] == ("4", "MIGRATE_COPY_WORKERS")
    assert rows["exclude"] == (json.dumps(["*.bak", "cache/"]), "MIGRATE_EXCLUDE")
    assert rows["max_retries"] == ("7", "--max-retries")
    assert set(rows) == set(Settings.model_fields)
    assert not db.exists()  # showing settings writes nothing


def test_config_show_without_a_file_says_so(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "config", "show", "--db", str(tmp_path / "run.duckdb"))
    assert code == 0
    head, rows = parse_show(out)
    assert head.startswith("settings file: none")
    assert {origin for _, origin in rows.values()} == {"default"}


def test_a_buffer_given_alone_brings_its_own_low_water(tmp_path, capsys):
    """low_water's default is a quarter of the buffer: the default 1024 only fits the default 4096."""
    code, out, err = run_cli(capsys, "config", "show", "--db", str(tmp_path / "run.duckdb"), "--buffer-size", "800")
    assert code == 0, err
    rows = parse_show(out)[1]
    assert rows["buffer_size"] == ("800", "--buffer-size") and rows["low_water"] == ("200", "default")
    assert parse_show(run_cli(capsys, "config", "show")[1])[1]["low_water"] == ("1024", "default")


def test_a_misspelt_variable_is_named_not_ignored_in_silence(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("MIGRATE_BWLIMT", "1M")
    monkeypatch.setenv("MIGRATE_CRASH_AT", "")  # the tests' crash points: not a setting, not a typo
    code, out, err = run_cli(capsys, "config", "show")
    assert code == 0
    assert err == "migrate: note: MIGRATE_BWLIMT is not a setting (did you mean MIGRATE_BWLIMIT?); ignored\n"


def test_config_show_of_a_run_file_shows_what_its_resume_would_use(tmp_path, capsys):
    src = small_tree(tmp_path / "src")
    db = tmp_path / "run.duckdb"
    code, _, err = run_cli(capsys, "run", str(src), str(tmp_path / "dst"), "--db", str(db), "--dry-run",
                           "--bwlimit", "1M", "--copy-workers", "3")
    assert code == 0, err
    code, out, err = run_cli(capsys, "config", "show", "--db", str(db), "--copy-workers", "2")
    assert code == 0, err
    head, rows = parse_show(out)
    assert f"run file: {db}" in head
    assert rows["bwlimit"] == (str(1 << 20), f"run file {db}")
    assert rows["copy_workers"] == ("2", "--copy-workers")  # set now: outranks the stored value
    assert rows["src_workers"] == ("2", f"run file {db}")


def test_env_list_accepts_json_and_commas(monkeypatch):
    monkeypatch.setenv("MIGRATE_EXCLUDE", '["a,b", "c/"]')
    assert load().settings.exclude == ["a,b", "c/"]
    monkeypatch.setenv("MIGRATE_EXCLUDE", " *.tmp ,, logs/ ")
    assert load().settings.exclude == ["*.tmp", "logs/"]
    monkeypatch.setenv("MIGRATE_EXCLUDE", '["unclosed"')
    with pytest.raises(UserError, match=r"'exclude' from MIGRATE_EXCLUDE: not a JSON array"):
        load()


def test_the_real_run_uses_and_stores_the_effective_settings(tmp_path, monkeypatch, capsys):
    src = small_tree(tmp_path / "src")
    db = tmp_path / "run.duckdb"
    write(tmp_path / "migrate.toml", FILE)
    monkeypatch.setenv("MIGRATE_COPY_WORKERS", "4")
    monkeypatch.setenv("MIGRATE_DST_WORKERS", "2")  # the flag below wins
    code, _, err = run_cli(capsys, "run", str(src), str(tmp_path / "dst"), "--db", str(db), "--dst-workers", "3")
    assert code == 0, err
    assert not (tmp_path / "dst" / "skip.tmp").exists()  # the file's exclude pattern applied
    assert (tmp_path / "dst" / "sub" / "f1.txt").read_bytes() == b"x"
    store = Store.open(str(db))
    try:
        stored = store.run_info().settings
    finally:
        store.close()
    assert (stored["src_workers"], stored["copy_workers"], stored["dst_workers"]) == (2, 4, 3)
    assert stored["exclude"] == ["*.tmp"] and stored["max_retries"] == 5

    # a resume keeps the stored values except what is set now; what cannot change mid-run is kept, said once
    monkeypatch.delenv("MIGRATE_COPY_WORKERS")
    monkeypatch.delenv("MIGRATE_DST_WORKERS")
    (tmp_path / "migrate.toml").unlink()
    monkeypatch.setenv("MIGRATE_MAX_RETRIES", "9")
    code, out, err = run_cli(capsys, "resume", "--db", str(db), "--src-workers", "5", "--pull-batch", "7")
    assert code == 0, err
    assert "nothing to resume" in out
    assert err.strip() == ("migrate: note: 'pull_batch' cannot change for a run already started; keeping 2048 "
                           "(--pull-batch says 7)")
    store = Store.open(str(db))
    try:
        stored = store.run_info().settings
    finally:
        store.close()
    assert (stored["src_workers"], stored["max_retries"]) == (5, 9)  # flag, env
    assert (stored["copy_workers"], stored["dst_workers"]) == (4, 3)  # kept from the run, not the defaults
    assert stored["pull_batch"] == 2048


BAD = [
    # (layer, file text, env, flags, expected one line)
    ("flag", None, {}, ["--src-workers", "0"],
     r"invalid setting 'src_workers' from --src-workers: Input should be greater than or equal to 1 \(got '0'\)"),
    ("flag", None, {}, ["--bwlimit", "fast"],
     r"invalid setting 'bwlimit' from --bwlimit: 'fast' is not a size"),
    ("env", None, {"MIGRATE_COPY_WORKERS": "many"}, [],
     r"invalid setting 'copy_workers' from MIGRATE_COPY_WORKERS: Input should be a valid integer"),
    ("env", None, {"MIGRATE_VERIFY": "perhaps"}, [],
     r"invalid setting 'verify' from MIGRATE_VERIFY: Input should be a valid boolean"),
    ("file", "lease_timeout = -1\n", {}, [],
     r"invalid setting 'lease_timeout' from settings file .*migrate\.toml: Input should be greater than 0"),
    ("file", "copy_worker = 3\n", {}, [],
     r"unknown setting 'copy_worker' in .*migrate\.toml \(did you mean 'copy_workers'\?\)"),
    ("file", "src_workers = = 2\n", {}, [],
     r"settings file '.*migrate\.toml' is not valid TOML: .*\(at line 1, column \d+\)"),
    ("file", "buffer_size = 100\nlow_water = 100\n", {}, [],
     r"invalid setting 'low_water' from settings file .*migrate\.toml: must be below buffer_size \(100\)"),
    ("file", b"\xff\xfe", {}, [],
     r"settings file '.*migrate\.toml' is not valid TOML: not UTF-8 text \(byte 0xff at offset 0\); save it as UTF-8"),
    ("env", None, {"MIGRATE_DUCKDB_MEMORY_LIMIT": "1KB"}, [],
     r"invalid setting 'duckdb_memory_limit' from MIGRATE_DUCKDB_MEMORY_LIMIT: below the 32MB a run file needs"),
    ("flag", None, {}, ["--duckdb-memory-limit", "16MB"],
     r"invalid setting 'duckdb_memory_limit' from --duckdb-memory-limit: below the 32MB a run file needs"),
    # a glob whose character class is no regex class: was a traceback, and a run file made before it
    ("flag", None, {}, ["--exclude", "[z-a]"],
     r"invalid setting 'exclude' from --exclude: '\[z-a\]' is not a valid glob"),
    ("file", 'exclude = ["*.tmp", "[9-0]*"]\n', {}, [],
     r"invalid setting 'exclude' from settings file .*migrate\.toml: '\[9-0\]\*' is not a valid glob"),
    # TOML's inf: was an OverflowError traceback (and, edited in during a run, hot reload stopped for good)
    ("file", "bwlimit = inf\n", {}, [],
     r"invalid setting 'bwlimit' from settings file .*migrate\.toml: inf is not a size"),
    # a bool is an int to Python: was taken as 1 byte/s
    ("file", "bwlimit = true\n", {}, [],
     r"invalid setting 'bwlimit' from settings file .*migrate\.toml: true is not a size"),
    # below a byte: was int() to 0, i.e. unlimited
    ("flag", None, {}, ["--bwlimit", "0.5"],
     r"invalid setting 'bwlimit' from --bwlimit: '0.5' is less than 1 byte"),
    # a TOML float above -1: int() made it 0, i.e. unlimited, where -1 is refused
    ("file", "bwlimit = -0.5\n", {}, [],
     r"invalid setting 'bwlimit' from settings file .*migrate\.toml: -0\.5 is less than 1 byte"),
]


@pytest.mark.parametrize("layer,text,env,flags,expected", BAD, ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_bad_values_in_every_layer_are_one_line_exit_2_and_write_nothing(tmp_path, monkeypatch, capsys,
                                                                        layer, text, env, flags, expected):
    src = small_tree(tmp_path / "src")
    db = tmp_path / "run.duckdb"
    if isinstance(text, bytes):
        (tmp_path / "migrate.toml").write_bytes(text)
    elif text is not None:
        write(tmp_path / "migrate.toml", text)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for argv in (["run", str(src), str(tmp_path / "dst"), "--db", str(db), *flags],
                 ["config", "show", "--db", str(db), *flags],
                 ["watch", str(src), str(tmp_path / "dst"), "--db", str(db), *flags]):
        code, out, err = run_cli(capsys, *argv)
        assert code == 2, (argv, err)
        assert out == ""
        lines = err.splitlines()
        assert len(lines) == 1, err
        assert re.fullmatch(r"migrate: error: " + expected + ".*", lines[0]), lines[0]
        assert not db.exists() and not (tmp_path / "dst").exists()


def test_a_memory_limit_duckdb_shows_in_pib_is_taken(tmp_path, capsys):
    """DuckDB shows 2000TB as '1.7 PiB', a unit the size parser does not know: it was refused as 'not a size'."""
    src = small_tree(tmp_path / "src")
    code, out, err = run_cli(capsys, "run", str(src), str(tmp_path / "dst"), "--db", str(tmp_path / "r.duckdb"), "-n",
                             "--duckdb-memory-limit", "2000TB")
    assert code == 0 and err == "", err


def test_a_missing_config_file_is_refused(tmp_path, capsys):
    code, _, err = run_cli(capsys, "config", "show", "--config", str(tmp_path / "nope.toml"))
    assert code == 2
    assert err.strip() == f"migrate: error: settings file '{tmp_path / 'nope.toml'}' does not exist; " \
                          "give the path of a TOML file to --config"


def test_describe_lists_every_setting_once(tmp_path):
    text = describe(load())
    keys = [line.split()[0] for line in text.splitlines()[2:]]
    assert keys == list(Settings.model_fields)


def test_excludes_given_to_a_dry_run_plan_or_a_started_run_are_never_ignored(tmp_path, capsys):
    """A dry run's plan made without an exclude is made again with it (its plan would copy the excluded
    files); a started run refuses another exclude, writing nothing (what it listed was decided with its own)."""
    src = small_tree(tmp_path / "src")
    planned, dst = tmp_path / "planned.duckdb", tmp_path / "dst"
    assert run_cli(capsys, "run", str(src), str(dst), "--db", str(planned), "--dry-run")[0] == 0
    code, _, err = run_cli(capsys, "run", str(src), str(dst), "--db", str(planned), "--exclude", "*.tmp")
    assert code == 0, err
    assert "the dry run's plan was made with exclude []; comparing the trees again" in err
    assert (dst / "sub" / "f1.txt").exists() and not (dst / "skip.tmp").exists()

    started, dst2 = tmp_path / "started.duckdb", tmp_path / "dst2"
    env = {**os.environ, "MIGRATE_CRASH_AT": "copied:3"}
    killed = subprocess.run([sys.executable, "-m", "engine.cli", "run", str(src), str(dst2), "--db", str(started)],
                            env=env, capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL
    before = sorted(p.relative_to(dst2) for p in dst2.rglob("*"))
    for argv in (["run", str(src), str(dst2), "--db", str(started)], ["resume", "--db", str(started)]):
        code, _, err = run_cli(capsys, *argv, "--exclude", "*.tmp")
        assert code == 2 and "was started with exclude [], but " in err and "gives ['*.tmp']" in err, err
        assert "drop that to continue it with its own" in err
        assert err.count("\n") == 1
    assert sorted(p.relative_to(dst2) for p in dst2.rglob("*")) == before
    assert run_cli(capsys, "resume", "--db", str(started))[0] == 0  # as it was started: it finishes
    assert (dst2 / "skip.tmp").exists()
