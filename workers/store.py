"""The result store: Parquet files under ``<results>/<sweep>/``, written atomically.

Layout (every path derives from a content-hashed trial id, so a re-run overwrites nothing
it should keep and never trains a finished point again)::

    <root>/trials/<trial_id>.parquet   one row, schema TRIALS_SCHEMA, written last
    <root>/steps/<trial_id>.parquet    the trial's step rows, schema STEPS_SCHEMA
    <root>/evals/<trial_id>.parquet    the trial's task evaluations, schema EVALS_SCHEMA
    <root>/checkpoints/<trial_id>.pt   a running trial's training state, written through its
                                       context (workers.trainers.interface); deleted once the
                                       trial's rows are committed
    <root>/checkpoints/<trial_id>.run/ a command trainer's workspace (trial file, output,
                                       checkpoint directory; a .run.tar copy on object storage),
                                       kept for a retry until the trial's rows are committed
    <root>/checkpoints/<stem_id>/<step>.pt  a wsd stem's state at a branch point; deleted once
                                       the branches that start there have committed
    <root>/<table>/part-<ns>-<u>.parquet  many trials' rows, merged by ``compact``

One file per trial keeps commits independent (no two workers ever write one file), but a
10,000-trial sweep then has 20,000 small files, and reading them dominates every query.
``compact`` merges files into part files while nothing can rewrite them: the driver merges
the trials it recorded every 1,000 results, and everything at the end of a large sweep, when
no trial runs (orchestrator.running.driver, orchestrator.sweep). Precedence makes it crash-safe and keeps
re-runs right: a per-trial file wins over any part holding the same trial id (it was written
later: a retried failed trial, or a crash between writing a part and deleting what it
merged), and a newer part wins over an older one.

A trial row is written after its step rows, so a trial row is the commit record: when it
exists, everything about that trial does. Writes go to a temporary name in the same
directory and are then renamed, so a reader never sees a half-written file (rename is
atomic on POSIX filesystems; object stores publish a whole object at once).

``root`` is a local path or any URI pyarrow's filesystems understand (s3://, gs://, ...).
Contract (tests/test_store.py runs it against a local directory and memory://): ``write_trial`` then
``finished_ids`` includes the id; ``read_trials`` returns every committed row.
``write_bytes`` / ``read_bytes`` / ``delete`` move opaque blobs (checkpoints) by a path
relative to ``root``, with the same write-then-rename atomicity.
"""

from __future__ import annotations

import enum
import logging
import time
import uuid

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

__all__ = ["TrialStatus", "TRIALS_SCHEMA", "STEPS_SCHEMA", "EVALS_SCHEMA", "TABLES", "steps_schema", "ResultStore", "StoreError", "checkpoint_path",
           "stem_checkpoint_path"]

log = logging.getLogger(__name__)

PART_PREFIX = "part-"
COMPACT_MIN_FILES = 256  # per-trial files in a table before the driver merges them


class StoreError(ValueError):
    """A results file that reads but holds what no sweep writes (a trials row whose status is
    not a TrialStatus): refused, naming the file, rather than skipped, since a re-run would
    train the trial again and overwrite the file (the CLI prints it as one line, exit 2)."""


class TrialStatus(str, enum.Enum):
    COMPLETED = "completed"
    DIVERGED = "diverged"  # NaN/inf loss: a result about the point, not a crash
    FAILED = "failed"  # error in the trial; recorded with its traceback

    def is_finished(self) -> bool:
        """Finished trials are never trained again; failed ones are retried by a re-run."""
        return self in (TrialStatus.COMPLETED, TrialStatus.DIVERGED)


TRIALS_SCHEMA = pa.schema(
    [
        ("sweep", pa.string()),
        ("trial_id", pa.string()),
        ("status", pa.string()),
        ("n_params", pa.int64()),
        ("n_params_nonembed", pa.int64()),
        ("n_params_total", pa.int64()),  # every parameter (all experts); n_params is the active N of 6ND
        ("n_layer", pa.int32()),
        ("d_model", pa.int32()),
        ("n_head", pa.int32()),
        ("tokens", pa.int64()),
        ("flops", pa.float64()),
        ("budget", pa.float64()),
        ("eval_loss", pa.float64()),
        ("train_loss", pa.float64()),
        ("seed", pa.int64()),
        ("lr", pa.float64()),
        ("batch_tokens", pa.int64()),
        ("wall_s", pa.float64()),
        ("error", pa.string()),
        ("name", pa.string()),
        ("finished_at", pa.float64()),  # unix time the row was committed (order, FLOPs over time)
        ("point_id", pa.string()),  # the design point: the trial's content hash without lr and batch
        ("recipe", pa.string()),  # where lr and batch came from (workers.config.TrialConfig.recipe)
        ("role", pa.string()),  # point (fitted) or stem (a wsd stable run its branches start from)
        ("parent_id", pa.string()),  # a branch's or stem segment's stem; "" for a point trained whole
        ("flops_spent", pa.float64()),  # what this row itself computed (a branch: its cooldown)
        ("variant", pa.string()),  # the spec's variant the trial belongs to ("baseline": no overrides)
        # The variant's identity (the hash of the settings it changes): readers label a row by it
        # (orchestrator.results.label_variants); null in rows written before it existed.
        ("variant_id", pa.string()),
        # The trainer's own numeric step columns (workers.trainers.interface.Context.report), comma
        # separated; null for none. The steps table is read with every column any trial names here.
        ("step_columns", pa.string()),
        # What the trial used (workers.run.meter): the device ("cpu", the GPU's name, "simulated"),
        # the CPU threads and GPUs it held (a fraction: packed), wall x GPUs held, its own tokens per
        # second of wall time, energy with its source (nvml, rapl, estimated, unavailable) and how it
        # was measured or estimated, hardware FLOPs per token (6N + attention, workers.flops), the
        # device's peak FLOP/s (null: unknown) and model FLOPs utilisation against it.
        ("device", pa.string()),
        ("cpus", pa.float64()),
        ("gpu_count", pa.float64()),
        ("gpu_seconds", pa.float64()),
        ("tokens_per_s", pa.float64()),
        ("energy_j", pa.float64()),
        ("energy_source", pa.string()),
        ("energy_note", pa.string()),
        ("flops_per_token", pa.float64()),
        ("peak_flops", pa.float64()),
        ("mfu", pa.float64()),
        # Ranks the trial trained on and how (ddp, fsdp; null on one rank): workers.run.distributed.
        ("workers", pa.int32()),
        ("strategy", pa.string()),
    ]
)

STEPS_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("step", pa.int64()),
        ("tokens", pa.int64()),
        ("flops", pa.float64()),
        ("train_loss", pa.float64()),
        ("eval_loss", pa.float64()),
        ("lr", pa.float64()),
        ("wall_s", pa.float64()),
        ("energy_j", pa.float64()),  # the trial's joules so far (workers.run.meter; null: not measured)
    ]
)


# One row per (trial, step, task) evaluated (workers.evals; workers.trainers.interface.EVAL_COLUMNS).
EVALS_SCHEMA = pa.schema(
    [
        ("trial_id", pa.string()),
        ("step", pa.int64()),
        ("tokens", pa.int64()),
        ("task", pa.string()),
        ("task_bpb", pa.float64()),  # the gold continuation's NLL, bits per UTF-8 byte
        ("acc", pa.float64()),
        ("acc_norm", pa.float64()),  # per-character normalised (lm-evaluation-harness's acc_norm)
        ("n_items", pa.int64()),
        ("chance", pa.float64()),
    ]
)
TABLES = ("trials", "steps", "evals")


def steps_schema(step_columns: list[str | None]) -> pa.Schema:
    """STEPS_SCHEMA and the float columns named in ``step_columns`` (trials rows' comma-separated lists)."""
    extra = sorted({c for cols in step_columns if cols for c in cols.split(",")} - set(STEPS_SCHEMA.names))
    return pa.schema(list(STEPS_SCHEMA) + [(c, pa.float64()) for c in extra])


def checkpoint_path(trial_id: str) -> str:
    """Where a trial's checkpoint lives, relative to the sweep's root."""
    return f"checkpoints/{trial_id}.pt"


def stem_checkpoint_path(stem_id: str, step: int) -> str:
    """Where a wsd stem's state after ``step`` steps lives (orchestrator.running.reuse): one
    file per step, so a branch point's checkpoint is never overwritten by a later one."""
    return f"checkpoints/{stem_id}/{int(step)}.pt"


def _damaged_consequence(path: str) -> str:
    """What skipping a damaged file means, and how to get its rows back: a re-run retrains only
    trials that have no row in trials/, so a damaged steps file alone recomputes nothing."""
    folder, _, name = path.rpartition("/")
    if folder.endswith("trials"):
        return ("its trials are left out of `trials`; the next `scalesweep run` of a grid or IsoFLOP sweep "
                "trains again those that have no other row")
    if _is_part(path):
        return "its per-step rows are left out of `steps` (the trials' final results in trials/ are unaffected)"
    tid = name[: -len(".parquet")]
    return (f"its per-step rows are left out of `steps` (the trial's final result in trials/ is unaffected; "
            f"to recompute its steps, delete trials/{tid}.parquet and steps/{tid}.parquet and re-run the sweep)")


class ResultStore:
    """Reads and writes one sweep's Parquet files under ``root`` (a path or URI)."""

    writes = True  # False for a rank's read-only view (workers.run.distributed.ReadOnlyStore)

    def __init__(self, root: str, filesystem: pafs.FileSystem | None = None):
        """``root`` is a path or URI; pass ``filesystem`` to use one already built (tests, fsspec)."""
        self.uri = str(root)
        if filesystem is not None:
            self.fs, self.root = filesystem, self.uri.rstrip("/")
        else:
            self.fs, self.root = _filesystem(self.uri)

    def _path(self, table: str, trial_id: str) -> str:
        return f"{self.root}/{table}/{trial_id}.parquet"

    def _write(self, table: str, trial_id: str, data: pa.Table) -> None:
        self.fs.create_dir(f"{self.root}/{table}", recursive=True)
        tmp = f"{self.root}/{table}/.tmp-{trial_id}-{uuid.uuid4().hex[:8]}.parquet"
        with self.fs.open_output_stream(tmp) as out:
            pq.write_table(data, out)
        self.fs.move(tmp, self._path(table, trial_id))

    def write_trial(self, row: dict, steps: list[dict] | None = None, evals: list[dict] | None = None) -> None:
        """Commit one trial: its step rows (with the columns its row's ``step_columns`` names) and
        task evaluations first, then its trial row."""
        if steps is not None:
            schema = steps_schema([row.get("step_columns")])
            self._write("steps", row["trial_id"], pa.Table.from_pylist(steps, schema=schema))
        if evals is not None:
            self._write("evals", row["trial_id"], pa.Table.from_pylist(evals, schema=EVALS_SCHEMA))
        self._write("trials", row["trial_id"], pa.Table.from_pylist([row], schema=TRIALS_SCHEMA))

    def list_files(self, table: str) -> list[str]:
        """Committed Parquet files of ``table`` (temporary files excluded), sorted."""
        sel = pafs.FileSelector(f"{self.root}/{table}", allow_not_found=True)
        infos = self.fs.get_file_info(sel)
        return sorted(
            i.path for i in infos if i.is_file and i.base_name.endswith(".parquet") and not i.base_name.startswith(".")
        )

    def read_table(self, table: str) -> pa.Table:
        """Every committed row of ``table`` ("trials", "steps" or "evals") in the current schema.

        A damaged file (truncated, not Parquet, missing key columns) is skipped with a warning
        naming it: reading results must never crash on one bad file. Columns an older schema
        lacks come back as nulls; columns this version does not know are dropped.
        """
        return self._read(table, self.list_files(table))[0]

    def _read(self, table: str, files: list[str]) -> tuple[pa.Table, list[str]]:
        """(rows of ``files`` after precedence, the files that could be read)."""
        if table == "trials":
            schema = TRIALS_SCHEMA
        elif table == "evals":
            schema = EVALS_SCHEMA
        else:  # the trainers' own columns too, as the trials rows name them
            schema = steps_schema(self._step_columns())
        parts = sorted(filter(_is_part, files), reverse=True)
        singles = [f for f in files if not _is_part(f)]
        head, ok = self._read_files(singles, schema)
        out, seen = [head], pc.unique(head["trial_id"])
        for path in parts:  # newest first: rows of trials seen in a newer file are superseded
            t, good = self._read_files([path], schema)
            ok += good
            if len(seen):
                t = t.filter(pc.invert(pc.is_in(t["trial_id"], value_set=seen)))
            out.append(t)
            seen = pc.unique(pa.concat_arrays([seen, pc.unique(t["trial_id"])]))
        rows = pa.concat_tables(out)
        if table == "trials":
            self._check_statuses(rows, ok)
        return rows, ok

    def _check_statuses(self, rows: pa.Table, files: list[str]) -> None:
        """StoreError naming the first of ``files`` with a status outside TrialStatus, if ``rows`` has one."""
        valid = pa.array([s.value for s in TrialStatus])
        if pc.all(pc.fill_null(pc.is_in(rows["status"], value_set=valid), False)).as_py() is not False:
            return
        for path in files:  # only on the error path: name the file
            status = pq.read_table(path, columns=["status"], filesystem=self.fs)["status"].to_pylist()
            bad = [v for v in status if v not in valid.to_pylist()]
            if bad:
                raise StoreError(f"{path}: status {bad[0]!r} is not one of {', '.join(valid.to_pylist())} "
                                 "(a damaged or foreign trials file: fix or remove it)")

    def _read_files(self, files: list[str], schema: pa.Schema) -> tuple[pa.Table, list[str]]:
        if not files:
            return schema.empty_table(), []
        # Fast path: one multi-threaded scan (10,000 files in 3-5 s here, ~18 s one by one);
        # missing columns of an older schema come back as nulls, unknown ones are dropped.
        try:
            t = pads.dataset(files, schema=schema, format="parquet", filesystem=self.fs).to_table()
            if t["trial_id"].null_count == 0:
                return t, list(files)
        except (pa.ArrowException, OSError, ValueError):
            pass
        parts, ok = [], []  # something is damaged: file by file, to name it and keep the rest
        for path in files:
            try:
                parts.append(_conform(pq.read_table(path, filesystem=self.fs), schema))
                ok.append(path)
            except (pa.ArrowException, OSError, ValueError) as e:
                log.warning("skipping damaged results file %s (%s); %s", path,
                            str(e).splitlines()[0] if str(e) else type(e).__name__, _damaged_consequence(path))
        return (pa.concat_tables(parts) if parts else schema.empty_table()), ok

    def _step_columns(self) -> list[str | None]:
        """The distinct ``step_columns`` of the trials rows: that one column read, not the table."""
        files = self.list_files("trials")
        if not files:
            return []
        try:
            t = pads.dataset(files, schema=TRIALS_SCHEMA, format="parquet", filesystem=self.fs).to_table(
                columns=["step_columns"])
        except (pa.ArrowException, OSError, ValueError):  # a damaged file: the careful reader names it
            t = self.read_table("trials")
        return t.column("step_columns").unique().to_pylist()

    def compact(self, table: str, only: set[str] | None = None) -> int:
        """Merge ``table``'s files into one new part file; returns how many files were merged.

        ``only=None`` merges every file (parts included). With ``only``, just the per-trial
        files of those trial ids are merged, into a part of their own: what a running driver
        does for trials it knows are settled. A file may be merged only while nothing can
        rewrite it (a trial committing mid-merge would be deleted with what was merged).
        Damaged files are left where they are, and still skipped with a warning.
        """
        files = self.list_files(table)
        if only is not None:
            files = [f for f in files if not _is_part(f) and f.rpartition("/")[2][: -len(".parquet")] in only]
        if len(files) < 2:
            return 0
        data, ok = self._read(table, files)
        self._write(table, f"{PART_PREFIX}{time.time_ns():020d}-{uuid.uuid4().hex[:8]}", data)
        for path in ok:  # the new part is written: what it merged can go
            try:
                self.fs.delete_file(path)
            except FileNotFoundError:
                pass
        return len(ok)

    def compact_if_large(self) -> int:
        """Merge each table into one file once it has COMPACT_MIN_FILES per-trial files or
        several parts (the end of a large sweep, when no trial runs); returns files merged."""
        n = 0
        for table in ("steps", "evals", "trials"):  # trials last: a crash in between leaves steps merged, trials not
            files = self.list_files(table)
            parts = sum(map(_is_part, files))
            if len(files) - parts >= COMPACT_MIN_FILES or parts > 1:
                n += self.compact(table)
        return n

    def read_trial(self, trial_id: str) -> dict | None:
        """The committed row of one trial, from its own file (None: none yet)."""
        path = self._path("trials", trial_id)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        return _conform(pq.read_table(path, filesystem=self.fs), TRIALS_SCHEMA).to_pylist()[0]

    def trial_statuses(self) -> dict[str, TrialStatus]:
        """trial_id -> status of every committed trial row."""
        t = self.read_table("trials").select(["trial_id", "status"]).to_pydict()
        return {tid: TrialStatus(s) for tid, s in zip(t["trial_id"], t["status"])}

    def exists(self) -> bool:
        return self.fs.get_file_info(self.root).type == pafs.FileType.Directory

    def write_text(self, name: str, text: str) -> None:
        self.fs.create_dir(self.root, recursive=True)
        tmp = f"{self.root}/.tmp-{uuid.uuid4().hex[:8]}-{name}"
        with self.fs.open_output_stream(tmp) as out:
            out.write(text.encode())
        self.fs.move(tmp, f"{self.root}/{name}")

    def _abs(self, rel_path: str) -> str:
        parts = rel_path.split("/")
        if rel_path.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"expected a relative path inside the sweep without '.', '..' or empty parts, got {rel_path!r}")
        return f"{self.root}/{rel_path}"

    def write_bytes(self, rel_path: str, data: bytes) -> None:
        """Write ``data`` at ``root/rel_path`` atomically: a reader sees the old blob or the new, never half."""
        path = self._abs(rel_path)
        parent, _, name = path.rpartition("/")
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{parent}/.tmp-{uuid.uuid4().hex[:8]}-{name}"
        with self.fs.open_output_stream(tmp) as out:
            out.write(data)
        self.fs.move(tmp, path)

    def read_bytes(self, rel_path: str) -> bytes | None:
        """The blob at ``root/rel_path``, or None when there is none."""
        path = self._abs(rel_path)
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        try:
            with self.fs.open_input_stream(path) as f:
                return f.read()
        except FileNotFoundError:  # deleted between the check and the open
            return None

    def list_names(self, rel_dir: str, dirs: bool = False) -> list[str]:
        """Names of the committed blobs (or, ``dirs``, the folders) in ``root/rel_dir``, temporary
        ones excluded; [] when there is none."""
        sel = pafs.FileSelector(self._abs(rel_dir), allow_not_found=True)
        kind = pafs.FileType.Directory if dirs else pafs.FileType.File
        return sorted(i.base_name for i in self.fs.get_file_info(sel) if i.type == kind and not i.base_name.startswith("."))

    def stem_steps(self, stem_id: str) -> list[int]:
        """Steps at which a wsd stem has a checkpoint (:func:`stem_checkpoint_path`), ascending."""
        names = self.list_names(f"checkpoints/{stem_id}")
        return sorted(int(n[:-3]) for n in names if n.endswith(".pt") and n[:-3].isdigit())

    def delete_dir(self, rel_dir: str) -> None:
        """Remove the folder ``root/rel_dir`` and what is in it; nothing to do when it does not exist."""
        path = self._abs(rel_dir)
        if self.fs.get_file_info(path).type == pafs.FileType.Directory:
            self.fs.delete_dir(path)

    def delete(self, rel_path: str) -> None:
        """Remove the blob at ``root/rel_path``; nothing to do when it does not exist."""
        path = self._abs(rel_path)
        if self.fs.get_file_info(path).type == pafs.FileType.NotFound:
            return
        try:
            self.fs.delete_file(path)
        except FileNotFoundError:  # deleted concurrently: the outcome is the same
            pass


def _is_part(path: str) -> bool:
    return path.rpartition("/")[2].startswith(PART_PREFIX)


def _conform(part: pa.Table, schema: pa.Schema) -> pa.Table:
    """``part`` in ``schema``: missing columns as nulls, unknown ones dropped, types cast."""
    key = "trial_id"
    if key not in part.column_names:
        raise ValueError(f"no {key} column (not a scalesweep {schema.names[0]!r} file?)")
    cols = []
    for f in schema:
        if f.name in part.column_names:
            cols.append(part.column(f.name).cast(f.type))
        else:
            cols.append(pa.nulls(part.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """pyarrow's filesystem for ``uri`` (local paths, s3://, gs://, hdfs://), else fsspec's
    behind pyarrow's adapter (memory://, az://, ...: whatever fsspec has installed), so every
    store goes through the same pyarrow calls."""
    try:
        return pafs.FileSystem.from_uri(_as_uri(uri))
    except pa.ArrowInvalid:
        if "://" not in uri:
            raise
        from fsspec.core import url_to_fs  # fsspec is a dependency of torch, so always present

        try:
            fs, path = url_to_fs(uri)
        except (ImportError, ValueError):
            raise ValueError(f"unknown filesystem scheme in {uri!r} (expected a local path, s3://, gs:// "
                             "or a scheme fsspec knows)") from None
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path.rstrip("/")


def _as_uri(root: str) -> str:
    if "://" in root:
        return root
    import os

    return os.path.abspath(root)
