"""The adaptive planner's Optuna journal, checked before Optuna reads it and never made worse.

Optuna's JournalFileBackend appends one JSON record per line. A driver killed mid-write (kill -9,
a node lost, a full disk) leaves a last line without its newline; Optuna skips such a line when
it reads, then appends the next record onto it, and the journal is broken in the middle for
every later read (issue 26). A file that is not a journal at all (junk, a truncated copy, another
program's log) raises from deep inside Optuna. So, before Optuna opens the file:

- a cut-off last record is recovered: the file is truncated to its last whole record, and the
  bytes removed are kept beside it (``planner.journal.partial-<n>``) first, so nothing is lost;
- any other line that is not a journal record refuses the sweep in one line naming the file and
  the line, and the file is left as it was (moving it aside starts the planner afresh; the
  trials already run keep their rows).
"""

from __future__ import annotations

import json
import logging
import os

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from orchestrator.errors import UserError

__all__ = ["check_journal", "open_study"]

log = logging.getLogger(__name__)

# How every record Optuna's journal writes begins (json.dumps of a dict whose first key is its
# op_code): a cut-off last line starts so, or is a piece of it.
RECORD_START = b'{"op_code":'


def _refuse(path: str, what: str) -> UserError:
    return UserError(f"{path}: {what} (expected the adaptive planner's Optuna journal, one JSON record per line; "
                     "move the file aside to start the planner afresh: finished trials keep their rows)")


def check_journal(path: str) -> None:
    """Recover a journal whose last record was cut off, or raise UserError for one that is not a
    journal (module docstring). Nothing to do for a whole journal or none."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return
    except OSError as e:
        raise UserError(f"{path}: cannot read the planner's journal ({e.strerror})") from None
    whole, _, tail = data.rpartition(b"\n")
    for number, line in enumerate(whole.split(b"\n") if whole else [], start=1):
        try:
            record = json.loads(line)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            raise _refuse(path, f"line {number} is not a JSON record") from None
        if not isinstance(record, dict) or "op_code" not in record:
            raise _refuse(path, f"line {number} is not an Optuna journal record")
    if not tail:
        return
    if not (tail.startswith(RECORD_START) or RECORD_START.startswith(tail)):
        last = data.count(b"\n") + 1
        raise _refuse(path, f"line {last} is not an Optuna journal record")
    n = 1
    while os.path.exists(f"{path}.partial-{n}"):
        n += 1
    with open(f"{path}.partial-{n}", "wb") as f:  # the removed bytes, kept before the journal changes
        f.write(tail)
    with open(path, "r+b") as f:
        f.truncate(len(data) - len(tail))
    log.warning("%s: its last record was cut off (a driver stopped mid-write); recovered up to the last whole "
                "record, the %d bytes removed kept in %s.partial-%d", path, len(tail), path, n)


def open_study(path: str, name: str) -> optuna.Study:
    """The study ``name`` in the journal at ``path`` (created if there is none), after
    :func:`check_journal`; UserError, with the file as it was, where Optuna cannot replay it."""
    check_journal(path)
    try:
        storage = JournalStorage(JournalFileBackend(path))
        return optuna.create_study(study_name=name, storage=storage, load_if_exists=True, direction="minimize")
    except Exception as e:  # noqa: BLE001 - records that parse but do not replay: any error of Optuna's
        raise _refuse(path, f"Optuna cannot replay it ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") \
            from None
