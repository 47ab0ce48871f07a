"""One writer per file: an exclusive lock file shared by ``MetricsLog`` and ``Checkpoints``."""

from __future__ import annotations

import errno
import os
import socket

try:  # POSIX; elsewhere files are not locked (one writer per file is then up to the user)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class WriterLock:
    """An exclusive ``flock`` on ``path`` (a small file holding the holder's pid and host).

    ``acquire`` fails at once with ``BlockingIOError`` when another open lock holds it (another
    process, or another object in this process); the kernel drops the lock when its holder
    dies, even by ``SIGKILL``, so a stale file never blocks. ``release`` removes the file.
    Without ``fcntl`` (not POSIX) nothing is locked.
    """

    def __init__(self, path: str):
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None or fcntl is None

    def holder(self) -> str:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as f:
                text = f.read().split()
        except OSError:
            text = []
        if len(text) >= 2:
            return f"process {text[0]} on {text[1]}"
        return "another process (pid not yet written)"

    def acquire(self, busy: str) -> None:
        """Take the lock; ``busy`` is the message when it is held (``{holder}`` is filled in)."""
        if self.held:
            return
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
                    raise BlockingIOError(errno.EWOULDBLOCK, busy.format(holder=self.holder())) from None
                raise
            try:  # the holder may have removed the file between our open and our flock
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
            self._fd = fd
            return

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            os.unlink(self.path)  # before unlocking: nobody can lock this file once it is gone
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __del__(self):
        try:
            self.release()
        except Exception:  # interpreter shutdown: the kernel drops the lock with the process anyway
            pass
