"""Progress and records: a progress bar, a per-run metrics log (JSONL or CSV), PNG plots.

All of it is quiet when not attached to a terminal (tests, batch jobs): the progress bar
shows only when stderr is a TTY, logs go to files, and plots are drawn with Matplotlib's Agg
canvas straight to PNG (no window, no global pyplot state).

A log file has one writer at a time: :class:`MetricsLog` holds an exclusive lock on it while
open, and :func:`read_metrics` only reads, so a running job's log can be looked at safely.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import tqdm

from rnnjax._lock import WriterLock

__all__ = ["MetricsLog", "plot_curves", "progress_bar", "read_metrics"]

_FORMATS = {".jsonl": "jsonl", ".csv": "csv"}

def progress_bar(total: int, *, initial: int = 0, desc: str | None = None, enabled: bool | None = None) -> tqdm.tqdm:
    """A tqdm progress bar over ``total`` steps (it shows steps/s; add the loss with ``set_postfix``).

    ``enabled=None`` shows it only when stderr is a terminal, so tests and logs stay clean;
    ``enabled=True`` shows it anyway, redrawn at most every 10 s when stderr is not a terminal
    (a log file or a pipe gets a line every 10 s, not one per step).

    >>> bar = progress_bar(100, initial=10)   # silent here: not a terminal
    >>> bar.disable
    True
    >>> bar.close()
    """
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        raise ValueError(f"total: expected a non-negative int, got {total!r}")
    terminal = sys.stderr.isatty()
    if enabled is None:
        enabled = terminal
    return tqdm.tqdm(total=total, initial=initial, desc=desc, disable=not enabled, unit="step", dynamic_ncols=True,
                     mininterval=0.1 if terminal else 10.0)


def _scalar(name: str, value: Any) -> int | float:
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "biuf":
        raise TypeError(f"metrics[{name!r}]: expected a number (a scalar), got shape {arr.shape} dtype {arr.dtype}")
    item = arr.reshape(()).item()
    return int(item) if arr.dtype.kind in "biu" else float(item)


def _parse_csv_value(text: str) -> int | float | None:
    if text == "":
        return None
    try:
        return int(text)
    except ValueError:
        return float(text)


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """The rows of a metrics file written by :class:`MetricsLog` (JSONL or CSV).

    An incomplete last line (a run killed mid-write) is ignored. A file that is not such a log
    (a row that is not a JSON object with an integer ``"step"``, a CSV file without a ``step``
    column or with a value that is not a number) is a ValueError naming the file and line.
    Reading never changes the file, and works while a :class:`MetricsLog` is writing it.
    """
    path = os.path.expanduser(os.fspath(path))
    fmt = _format(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise ValueError(f"path: expected a metrics log (UTF-8 text), got {path!r}, a binary file") from None
    complete = text[: text.rfind("\n") + 1]  # drop a partial last line
    rows = []
    if fmt == "jsonl":
        for n, line in enumerate(complete.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                row = None
            rows.append(_checked_row(path, n, line, row))
        return rows
    reader = csv.DictReader(io.StringIO(complete))
    if reader.fieldnames is not None and "step" not in reader.fieldnames:
        raise ValueError(
            f"path: expected a metrics log whose CSV header has a 'step' column, got {path!r} "
            f"with header {reader.fieldnames!r:.200}"
        )
    for raw in reader:
        try:
            row = {k: _parse_csv_value(v) for k, v in raw.items()}
        except (ValueError, TypeError):  # a text cell, or a row longer than the header
            row = None
        else:
            row = {k: v for k, v in row.items() if v is not None}
        rows.append(_checked_row(path, reader.line_num, raw, row))
    return rows


def _checked_row(path: str, line_no: int, line: Any, row: Any) -> dict:
    if not (isinstance(row, dict) and isinstance(row.get("step"), int) and not isinstance(row["step"], bool)
            and all(isinstance(v, (int, float)) for v in row.values())):
        raise ValueError(
            f"path: expected a metrics log (rows of numbers with an integer 'step'), got {path!r}, "
            f"whose line {line_no} is {line!r:.120}; the file was left as it is"
        )
    return row


def _format(path: str) -> str:
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in _FORMATS:
        raise ValueError(f"path: expected a file ending in .jsonl or .csv, got {path!r}")
    return _FORMATS[suffix]


class MetricsLog:
    """The metrics of one run, one row per logged step, kept in memory and appended to a file.

    Args:
      path: a ``.jsonl`` (one JSON object per line; NaN written as ``NaN``) or ``.csv`` file,
        or None to keep rows in memory only (``~`` is expanded). Rows already in the file are
        loaded and new ones appended (a resumed run continues its log; see :meth:`truncate`).
        Each row is written to the file as it is logged. A CSV file's columns are fixed by its
        first row. An existing file that is not a metrics log is a ValueError (and stays as it
        is); a path that cannot be written is an OSError naming ``path``.

    One writer per file: while open, the log holds an exclusive lock (an ``flock`` on
    ``path + ".lock"``, a file holding the writer's pid, removed on :meth:`close`). A second
    ``MetricsLog`` on the same file, in this process or another, raises ``BlockingIOError``
    naming the holder's process id instead of truncating or interleaving the rows of the one
    that writes; use :func:`read_metrics` to look at a running job's log. The lock is released
    by the kernel when its holder dies, even by ``SIGKILL``. (Without ``fcntl``, i.e. not on a
    POSIX system, files are not locked.) A row the file could not take (a full disk) is an
    OSError naming ``path``; the partial line is removed from the file and the row is not kept
    in :attr:`rows`, so memory and file stay equal.

    >>> log = MetricsLog()
    >>> log.write(1, {"loss": jnp.array(2.5), "skipped": jnp.array(False)})
    {'step': 1, 'loss': 2.5, 'skipped': 0}
    >>> _ = log.write(2, {"loss": 2.0})
    >>> log.series("loss")
    (array([1, 2]), array([2.5, 2. ]))
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = None if path is None else os.path.abspath(os.path.expanduser(os.fspath(path)))
        self.rows: list[dict] = []
        self._columns: list[str] | None = None
        self._file = None
        self._lock = None
        if self.path is None:
            return
        self._format = _format(self.path)
        if os.path.isdir(self.path):
            raise IsADirectoryError(f"path: expected a file for the metrics log, got the directory {self.path!r}")
        parent = os.path.dirname(self.path)
        if os.path.exists(parent) and not os.path.isdir(parent):
            raise NotADirectoryError(f"path: expected a file in a directory, got {self.path!r}, under a plain file")
        try:
            os.makedirs(parent, exist_ok=True)
            self._lock = WriterLock(self.path + ".lock")
            self._lock.acquire(
                f"path: the metrics log {self.path!r} is open for writing by {{holder}} (lock file "
                f"{self._lock.path}); use read_metrics(path) to read it while it runs, or log to another file"
            )
        except BlockingIOError:
            raise
        except OSError as e:
            raise type(e)(e.errno, f"path: cannot write the metrics log {self.path!r} ({e.strerror})") from e
        try:
            self._load()
        except BaseException:
            self.close()
            raise

    def _load(self) -> None:
        """Under the lock: read the rows, drop a partial last line, open for appending."""
        if os.path.exists(self.path):
            self.rows = read_metrics(self.path)  # a file that is no metrics log: ValueError, untouched
            with open(self.path, "rb") as f:
                data = f.read()
            if self._format == "csv":
                header = data.split(b"\n", 1)[0].decode("utf-8") + "\n" if b"\n" in data else ""
                self._columns = next(csv.reader([header]), None) if header else None
            complete = data.rfind(b"\n") + 1
        else:
            complete = None
        try:
            self._file = open(self.path, "ab", buffering=0)
            if complete is not None and complete < os.fstat(self._file.fileno()).st_size:
                os.ftruncate(self._file.fileno(), complete)  # a partial last line left by a crash
        except OSError as e:
            raise type(e)(e.errno, f"path: cannot write the metrics log {self.path!r} ({e.strerror})") from e

    def _line(self, row: dict) -> str:
        if self._format == "jsonl":
            return json.dumps(row) + "\n"
        out = io.StringIO()
        csv.DictWriter(out, fieldnames=self._columns).writerow(row)
        return out.getvalue()

    def _header(self) -> str:
        out = io.StringIO()
        csv.writer(out).writerow(self._columns)
        return out.getvalue()

    def _append(self, text: str, step: int) -> None:
        """Append ``text`` whole, or leave the file as it was and raise an OSError naming path."""
        fd = self._file.fileno()
        size = os.fstat(fd).st_size
        data = memoryview(text.encode("utf-8"))
        try:
            while data:
                data = data[os.write(fd, data):]
        except OSError as e:
            try:
                os.ftruncate(fd, size)  # no partial line: the next row starts on a line of its own
            except OSError:
                pass
            raise type(e)(
                e.errno, f"path: cannot append the row of step {step} to the metrics log {self.path!r} "
                f"({e.strerror}); the row was not logged"
            ) from e

    def _rewrite(self) -> None:
        """Replace the file with the rows in memory (written aside, then renamed)."""
        tmp = self.path + ".tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            if self._format == "csv" and self._columns is not None:
                f.write(self._header())
            for row in self.rows:
                f.write(self._line(row))
        os.replace(tmp, self.path)

    def write(self, step: int, metrics: Mapping[str, Any]) -> dict:
        """Append the row ``{"step": step, **metrics}``; values must be scalars (arrays of size 1).

        Booleans are stored as 0/1. Returns the row as written.
        """
        if not isinstance(step, (int, np.integer)) or isinstance(step, bool):
            raise TypeError(f"step: expected an int, got {step!r}")
        if not isinstance(metrics, Mapping):
            raise TypeError(f"metrics: expected a mapping of names to numbers, got {type(metrics).__name__}")
        row = {"step": int(step)}
        for name, value in metrics.items():
            if name == "step":
                raise ValueError("metrics: 'step' is reserved for the step number")
            row[str(name)] = _scalar(name, value)
        if self.path is not None and self._file is None:
            raise ValueError(f"log: the metrics log {self.path} is closed")
        header = ""
        if self._file is not None and self._format == "csv":
            columns = self._columns
            if columns is None:
                self._columns = list(row)
                header = self._header()
            extra = [k for k in row if k not in self._columns]
            if extra:
                self._columns = columns
                raise ValueError(
                    f"metrics: {extra} are not columns of the CSV log {self.path} (columns {self._columns}); "
                    f"use a .jsonl log for rows with varying keys"
                )
            try:
                self._append(header + self._line(row), row["step"])
            except OSError:
                self._columns = columns
                raise
        elif self._file is not None:
            self._append(self._line(row), row["step"])
        self.rows.append(row)
        return row

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of the rows that hold ``name``."""
        pairs = [(r["step"], r[name]) for r in self.rows if name in r]
        if not pairs:
            known = sorted({k for r in self.rows for k in r} - {"step"})
            raise KeyError(f"name: no logged metric {name!r} (have {known})")
        steps, values = zip(*pairs, strict=True)
        return np.asarray(steps), np.asarray(values)

    def truncate(self, step: int) -> None:
        """Drop the rows after ``step`` (e.g. those a crashed run logged past its last checkpoint)."""
        kept = [r for r in self.rows if r["step"] <= step]
        if len(kept) == len(self.rows):
            return
        if self._file is not None:
            self._file.close()
            self._file = None
            try:
                self.rows, rows = kept, self.rows
                self._rewrite()  # under the lock: no other writer can be appending meanwhile
            except OSError as e:
                self.rows = rows
                raise type(e)(e.errno, f"path: cannot rewrite the metrics log {self.path!r} ({e.strerror})") from e
            finally:
                self._file = open(self.path, "ab", buffering=0)
        self.rows = kept

    def close(self) -> None:
        """Close the file and release its lock (rows stay readable in :attr:`rows`)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"MetricsLog({self.path!r}, rows={len(self.rows)})"


def _ema(values: np.ndarray, smoothing: float) -> np.ndarray:
    """Exponential moving average, debiased like TensorBoard's; non-finite points are skipped."""
    out = np.empty(len(values))
    avg, weight = 0.0, 0.0
    for i, v in enumerate(values):
        if math.isfinite(v):
            avg = smoothing * avg + (1 - smoothing) * v
            weight = smoothing * weight + (1 - smoothing)
        out[i] = avg / weight if weight > 0 else np.nan
    return out


def plot_curves(
    curves: Mapping[str, Any],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    xlabel: str = "step",
    ylabel: str | None = None,
    logy: bool = False,
    smoothing: float = 0.0,
) -> str:
    """Draw named curves on one set of axes and save a PNG; returns the path.

    Args:
      curves: ``{label: y}`` (x is ``0, 1, ...``) or ``{label: (x, y)}``, e.g.
        ``{"train": log.series("loss")}``. NaN points are left out of the line.
      path: the ``.png`` file to write (parent directories are created).
      title, xlabel, ylabel: labels.
      logy: logarithmic y axis.
      smoothing: in ``[0, 1)``; above 0 each curve is drawn faintly with an exponential moving
        average (``avg = s * avg + (1 - s) * y``) over it.

    >>> import tempfile, os
    >>> p = plot_curves({"loss": [3.0, 2.0, 1.5]}, os.path.join(tempfile.mkdtemp(), "loss.png"))
    >>> os.path.getsize(p) > 0
    True
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(curves, Mapping) or not curves:
        raise TypeError(f"curves: expected a non-empty mapping of labels to y or (x, y), got {curves!r:.80}")
    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ValueError(f"path: expected a file ending in .png, got {path!r}")
    if not isinstance(smoothing, (int, float)) or not 0.0 <= smoothing < 1.0:
        raise ValueError(f"smoothing: expected a number in [0, 1), got {smoothing!r}")
    series = {}
    for label, data in curves.items():
        if isinstance(data, tuple) and len(data) == 2:
            x, y = (np.asarray(a, dtype=np.float64) for a in data)
        else:
            y = np.asarray(data, dtype=np.float64)
            x = np.arange(len(y), dtype=np.float64)
        if y.ndim != 1 or x.shape != y.shape:
            raise ValueError(
                f"curves[{label!r}]: expected 1-D y (and x of the same length), got y {y.shape} x {x.shape}"
            )
        series[str(label)] = (x, y)

    fig = Figure(figsize=(6.4, 4.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (label, (x, y)) in enumerate(series.items()):
        color = f"C{i % 10}"
        if smoothing > 0:
            ax.plot(x, y, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(x, _ema(y, smoothing), color=color, label=label)
        else:
            ax.plot(x, y, color=color, label=label)
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if len(series) > 1 or smoothing > 0:
        ax.legend()
    ax.grid(True, alpha=0.3)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    return path
