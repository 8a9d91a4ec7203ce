"""Observer: samples counters every ~200 ms, smooths rates (EMA), writes queue_stats rows, keeps history."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Callable

from engine.snapshot import RatePoint
from engine.store import Store
from engine.threads import start_thread

RATE_WINDOW_S = 3.0  # EMA time constant: rates follow changes within a few seconds, not per tick
HISTORY_POINTS = 300  # one point a second: the last five minutes


class Ema:
    __slots__ = ("value", "_last_count", "_last_time")

    def __init__(self):
        self.value = 0.0
        self._last_count = None
        self._last_time = None

    def update(self, count: float, now: float) -> float:
        if self._last_count is not None and count < self._last_count:
            self.value = 0.0  # another phase's counter starts from 0: a new rate, never a negative one
        elif self._last_time is not None and now > self._last_time:
            dt = now - self._last_time
            alpha = 1.0 - math.exp(-dt / RATE_WINDOW_S)
            self.value += alpha * ((count - self._last_count) / dt - self.value)
        self._last_count, self._last_time = count, now
        return self.value


class Observer:
    """`sample()` returns {queue name: metrics}; the observer adds rates and persists them."""

    def __init__(self, store: Store, interval: float, sample: Callable[[], dict[str, dict]]):
        self.store = store
        self.interval = interval
        self._sample = sample
        self.rates = {"discovery": Ema(), "items": Ema(), "bytes": Ema(), "src": Ema(), "dst": Ema()}
        self.history: deque[RatePoint] = deque(maxlen=HISTORY_POINTS)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_history = 0.0
        self._tick_lock = threading.Lock()  # the migration thread ticks once at each phase end
        self.ticks = 0

    def start(self) -> None:
        self._stop.clear()
        self._thread = start_thread(threading.Thread(target=self._loop, name="observer", daemon=True))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.tick()  # the final numbers reach the file too
        for rate in self.rates.values():  # nothing moves once the run has stopped
            rate.value = 0.0

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - a closed store at shutdown must not kill the process
                if self._stop.is_set():
                    return
                raise

    def tick(self) -> None:
        with self._tick_lock:
            self._tick()

    def _tick(self) -> None:
        now = time.time()
        metrics = self._sample()
        discovered = sum(m.get("total_discovered", 0) for m in metrics.values())
        copy = metrics.get("copy", {})
        d = self.rates["discovery"].update(discovered, now)
        i = self.rates["items"].update(copy.get("total", 0), now)
        b = self.rates["bytes"].update(copy.get("bytes", 0), now)
        for name, m in metrics.items():
            if name == "copy":
                m["items_per_second"], m["bytes_per_second"] = round(i, 2), round(b, 2)
            else:
                m["discovery_rate_items_per_sec"] = round(self.rates[name].update(m["total_discovered"], now), 2)
        self.store.write_queue_stats([(name, now, m) for name, m in metrics.items()])
        self.ticks += 1
        if now - self._last_history >= 1.0:
            self._last_history = now
            self.history.append(RatePoint(now, d, i, b))
