"""Progress of long steps (load, rebuild, report, trends with figures) on a terminal.

`terminal_progress()` gives the `progress(message)` callable the library functions accept: on a
terminal, one status line on stderr (tqdm) showing the current step and the time elapsed,
refreshed while a step runs and erased at the end; None when stderr is not a terminal or the
user asked for quiet, so piped and scheduled runs print no progress at all. Writes nothing else.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

from .output import terminal_safe

Progress = Callable[[str], None]
# Seconds between refreshes of the elapsed time while a step runs without news.
_TICK = 0.5


@contextmanager
def terminal_progress(
    quiet: bool = False, stream: TextIO | None = None
) -> Iterator[Progress | None]:
    """A status line for the steps of a long command, or None when quiet or not on a terminal."""
    out = stream if stream is not None else sys.stderr
    if quiet or not out.isatty():
        yield None
        return
    from tqdm import tqdm

    bar = tqdm(total=None, file=out, leave=False, bar_format="{desc} [{elapsed}]", desc="")
    lock = threading.Lock()
    stop = threading.Event()

    def tick() -> None:
        while not stop.wait(_TICK):
            with lock:
                bar.refresh()

    def step(message: str) -> None:
        with lock:
            bar.set_description_str(terminal_safe(message), refresh=True)

    ticker = threading.Thread(target=tick, name="progress", daemon=True)
    ticker.start()
    try:
        yield step
    finally:
        stop.set()
        ticker.join()
        bar.close()
