"""What a sync tells its user: a status line for people, JSON lines for scripts.

People get one live line (files and bytes to go, rate, time left) when the output is a
terminal, and a line per noteworthy event (conflict, refusal, error, something not
synced) otherwise. ``--json`` prints one JSON object per line per event, and nothing else,
so a script can follow a sync without parsing prose.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

NOTEWORTHY = {"conflict", "notice", "error", "refused", "case", "summary", "locked"}


class Reporter:
    """Thread-safe: transfers report from worker threads."""

    def __init__(self, as_json: bool = False, stream: TextIO | None = None, quiet: bool = False):
        self.as_json = as_json
        self.stream = stream or sys.stdout
        self.quiet = quiet
        self.lock = threading.Lock()
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self.files_left = 0
        self.bytes_done = 0
        self.started = time.monotonic()

    # ---- events ----------------------------------------------------------------------
    def event(self, kind: str, /, **data: Any) -> None:
        with self.lock:
            if self.as_json:
                self.stream.write(json.dumps({"event": kind, **data}, ensure_ascii=False) + "\n")
                self.stream.flush()
                return
            if self.quiet and kind not in ("error", "refused", "conflict", "locked"):
                return
            if kind in NOTEWORTHY:
                line = self._human(kind, data)
                if self._progress is not None:
                    self._progress.console.print(line, markup=False, highlight=False)
                else:
                    self.stream.write(line + "\n")
                    self.stream.flush()

    @staticmethod
    def _human(kind: str, d: dict[str, Any]) -> str:
        if kind == "conflict":
            return f"conflict: {d['path']} changed on both sides; yours is kept as {d['copy']}"
        if kind == "summary":
            return (
                f"in sync: {d['uploaded']} up ({_size(d['bytes_up'])}), "
                f"{d['downloaded']} down ({_size(d['bytes_down'])}), "
                f"{d['deleted_remote']} deleted on the server (to its trash), "
                f"{d['deleted_local']} deleted here, {d['conflicts']} conflicts"
                + (f", {d['errors']} errors" if d.get("errors") else "")
                + (f", {d['locked']} locked on the server (will retry)" if d.get("locked") else "")
                + f" in {d['seconds']:.1f} s"
            )
        if kind in ("notice", "case"):
            return f"note: {d['path']}: {d['message']}"
        return f"{kind}: {d.get('path', '')}{': ' if d.get('path') else ''}{d.get('message', '')}"

    # ---- the status line ---------------------------------------------------------------
    def start(self, files: int, total_bytes: int) -> None:
        self.files_left = files
        self.bytes_done = 0
        self.started = time.monotonic()
        if self.as_json:
            self.event("plan", files=files, bytes=total_bytes)
            return
        if self.quiet or not files or not self.stream.isatty():
            return
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=Console(file=self.stream),
            transient=True,
        )
        self._progress.start()
        self._task = self._progress.add_task(self._describe(), total=max(total_bytes, 1))

    def _describe(self) -> str:
        return f"{self.files_left} files to go"

    def advance(self, files: int = 0, nbytes: int = 0) -> None:
        with self.lock:
            self.files_left = max(0, self.files_left - files)
            self.bytes_done += nbytes
            if self._progress is not None and self._task is not None:
                self._progress.update(self._task, advance=nbytes, description=self._describe())

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _size(n: int) -> str:
    step = 1024.0
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < step or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= step
    return f"{n} B"
