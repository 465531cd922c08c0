"""One driver per results directory: an advisory lock that dies with its holder.

``fcntl.flock`` on ``<sweep>/.driver.lock``: the kernel releases it when the holding process
exits for any reason (kill -9 included), so a crashed driver never leaves a stale lock, and a
second driver fails at once with a message naming the holder. The file's content (pid, host,
start time) is only for that message. Object-store results (s3://, gs://) have no such lock;
there the user must not start two drivers on one sweep, and the CLI says so.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time

from orchestrator.errors import UserError

__all__ = ["DriverLock"]


class DriverLock:
    def __init__(self, sweep_dir: str):
        self.path = os.path.join(sweep_dir, ".driver.lock")
        self._fh = None

    def acquire(self) -> "DriverLock":
        fh = open(self.path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            try:
                holder = json.loads(fh.read() or "{}")
            except ValueError:
                holder = {}
            fh.close()
            who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {holder.get('started', '?')}"
            raise UserError(f"{os.path.dirname(self.path)}: another scalesweep driver is running this sweep ({who}); "
                            "wait for it to finish or stop it, then run again") from None
        fh.seek(0)
        fh.truncate()
        fh.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "DriverLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
