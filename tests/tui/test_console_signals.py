"""SIGTERM and SIGHUP end the real migrate-tui process as q does: in-flight tasks finish, the run is
sealed, the terminal is given back, the command that resumes the run is printed, exit 130. A hangup
(the terminal closed) does the same without the terminal: nothing hangs trying to draw on it.

The process runs in a pseudo-terminal of its own, as its controlling terminal, as in a terminal
window: what it writes there is what a terminal would get."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from engine.migration import Migration
from engine.treegen import make_source

REPO = Path(__file__).resolve().parents[2]
ROWS, COLUMNS = 40, 130
# as a terminal window's shell would start it: the pseudo-terminal is its controlling terminal, so
# closing it hangs the process up (SIGHUP, and SIGCONT, from the kernel)
CONSOLE = ("import fcntl, sys, termios, tui.app; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
           "sys.exit(tui.app.main())")
ALT_SCREEN_ON, ALT_SCREEN_OFF = b"\x1b[?1049h", b"\x1b[?1049l"
CURSOR_SHOWN, MOUSE_OFF = b"\x1b[?25h", b"\x1b[?1000l"


class Terminal:
    """migrate-tui started in a new pseudo-terminal; ``output`` collects all it writes there."""

    def __init__(self, argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
        env = dict(os.environ, PYTHONPATH=str(REPO), TERM="xterm-256color", **(env or {}))
        self.process = subprocess.Popen([sys.executable, "-c", CONSOLE, *argv], stdin=slave, stdout=slave,
                                        stderr=slave, cwd=cwd, env=env, start_new_session=True)
        os.close(slave)
        self.output = bytearray()
        self._closing = threading.Event()
        self._reader = threading.Thread(target=self._read, name="terminal reader")
        self._reader.start()

    def _read(self) -> None:
        while not self._closing.is_set():
            if select.select([self.master], [], [], 0.05)[0]:
                try:
                    data = os.read(self.master, 65536)
                except OSError:  # EIO: the process and its terminal are gone
                    return
                if not data:
                    return
                self.output.extend(data)

    def wait_for(self, text: bytes, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.process.poll() is None, f"migrate-tui ended ({self.process.returncode}) before {text!r}"
            assert time.monotonic() < deadline, f"{text!r} not shown in time"
            time.sleep(0.05)

    def close(self) -> None:
        """Close the terminal, as its window is closed: the process is hung up."""
        self._closing.set()
        self._reader.join()
        os.close(self.master)
        self.master = -1

    def wait(self, timeout: float = 60) -> int:
        """The process's exit code, once what it wrote is all in ``output``."""
        code = self.process.wait(timeout)
        if self.master != -1:
            self._closing.set()
            self._reader.join()
            # what is left (a helper process of the run may still hold the terminal: no EIO to wait for)
            while select.select([self.master], [], [], 0.2)[0]:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    break
                if not data:
                    break
                self.output.extend(data)
            os.close(self.master)
            self.master = -1
        return code

    def text(self) -> str:
        return self.output.decode("utf-8", "replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self.master != -1:
            self.close()


def assert_terminal_given_back(terminal: Terminal) -> bytes:
    """Everything after the console's last screen: the alternate screen left, the mouse no longer
    reported, the cursor shown. Returns what came after that (its last words)."""
    last_screen = terminal.output[terminal.output.rindex(ALT_SCREEN_ON):]
    assert ALT_SCREEN_OFF in last_screen and CURSOR_SHOWN in last_screen and MOUSE_OFF in last_screen
    return bytes(last_screen[last_screen.rindex(ALT_SCREEN_OFF):])


def assert_interrupted_and_resumable(db: Path) -> None:
    migration = Migration.open(str(db))  # the file is free again: the process has closed it
    try:
        assert migration.interrupted and migration.snapshot().phase == "interrupted"
    finally:
        migration.close()


@pytest.fixture
def terminals():
    started: list[Terminal] = []

    def start(*args, **kwargs) -> Terminal:
        started.append(Terminal(*args, **kwargs))
        return started[-1]

    yield start
    for terminal in started:  # a failed test leaves no process behind
        terminal.kill()


def test_sigterm_quits_the_demo_as_q_does_and_gives_the_terminal_back(tmp_path, terminals):
    terminal = terminals(["--demo"], tmp_path, env={"TMPDIR": str(tmp_path)})
    terminal.wait_for(b"SRC round")  # the console has drawn its screen; the demo run goes on for a while
    terminal.process.send_signal(signal.SIGTERM)
    assert terminal.wait() == 130
    last_words = assert_terminal_given_back(terminal).decode()
    (demo,) = tmp_path.glob("migrate-tui-demo-*")
    db = demo / "demo.duckdb"
    assert f"migrate-tui: demo trees and database kept in {demo}\r\n" in last_words
    assert f"migrate-tui: stopped; resume with: migrate-tui --db {db} (R), or migrate resume --db {db}\r\n" \
        in last_words
    assert "Traceback" not in terminal.text()
    assert_interrupted_and_resumable(db)


@pytest.fixture
def slow_run(tmp_path):
    """A real source tree whose copy, at 4 KiB/s, lasts minutes: it is on when the signal comes."""
    src, dst, db = tmp_path / "src", tmp_path / "dst", tmp_path / "r.duckdb"
    make_source(src, 200, seed=7, max_depth=3, symlinks=0)
    return ["--db", str(db), str(src), str(dst)], {"MIGRATE_BWLIMIT": "4K"}, db


def test_sighup_from_kill_quits_as_q_does_and_gives_the_terminal_back(tmp_path, terminals, slow_run):
    argv, env, db = slow_run
    terminal = terminals(argv, tmp_path, env=env)
    terminal.wait_for(b"SRC round")
    terminal.process.send_signal(signal.SIGHUP)  # `kill -HUP`: the terminal is still there
    assert terminal.wait() == 130
    last_words = assert_terminal_given_back(terminal).decode()
    assert f"migrate-tui: stopped; resume with: migrate-tui --db {db} (R), or migrate resume --db {db}" \
        in last_words
    assert_interrupted_and_resumable(db)


def test_a_closed_terminal_hangs_the_console_up_and_the_run_is_sealed_without_it(tmp_path, terminals, slow_run):
    """The kernel's SIGHUP, and SIGCONT, on which Textual would take the terminal over again: with
    the terminal gone, nothing may wait on writing to it."""
    argv, env, db = slow_run
    terminal = terminals(argv, tmp_path, env=env)
    terminal.wait_for(b"SRC round")
    terminal.close()
    assert terminal.wait(timeout=60) == 130
    assert_interrupted_and_resumable(db)
