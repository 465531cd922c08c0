"""A lab's training command as a trainer: ``trainer: {command: "python train.py --config {trial_json}"}``.

The contract (docs/trainers.md) in files and environment variables, for an
existing ``train.py`` (nanoGPT, litgpt, torchtitan, a lab's own), as W&B Sweeps runs any script:

- ``SCALESWEEP_TRIAL``: a JSON file with the trial (workers.trainers.interface.Trial.to_json);
- ``SCALESWEEP_OUTPUT``: a directory the command writes ``metrics.jsonl`` to (one JSON object per
  line, at least ``step``, ``tokens`` and one of ``train_loss`` / ``eval_loss``; more numeric fields
  become step columns) and, at the end, ``result.json`` (at least ``n_params`` and ``eval_loss``,
  null or NaN for a diverged run), and optionally ``evals.jsonl``: task evaluations, one JSON
  object per (step, task) with ``step``, ``tokens``, ``task``, ``task_bpb``, ``acc`` and optionally
  ``acc_norm``, ``n_items``, ``chance`` (the ``evals`` table; workers.evals). They survive retries with the checkpoint: a resumed command
  appends, and a row whose step was reported before replaces the earlier one;
- ``SCALESWEEP_CHECKPOINT_DIR``: a directory that survives retries of this trial (empty on the
  first attempt): save there, and resume from what is there;
- ``SCALESWEEP_STEM_DIR`` (wsd reuse): the trial's stem's states, one file ``<step>.pt`` per step
  (a stem trial writes one at each of its ``stops``; a branch starts from ``<start_step>.pt``).

It runs in the spec file's directory, in a process group of its own, with stdout and stderr going
to the trial's log (the Ray worker's). A non-zero exit, a missing result.json or a malformed
line is a FAILED row whose error names the file, the line and the command's last stderr lines.
Whatever ends the worker (a killed driver, ``scalesweep stop``, Ray cancelling the task) ends
the command's whole process group: a watcher process outlives the worker by a moment to do it.

On a local results directory the directories are the store's own (nothing is copied); on object
storage they are local copies, downloaded before the command and uploaded after it exits.
"""

from __future__ import annotations

import collections
import io
import json
import logging
import os
import shlex
import shutil
import signal
import string
import subprocess
import sys
import tarfile
import tempfile
import threading
from dataclasses import asdict
from typing import Callable

import pyarrow.fs as pafs

from workers.config import TrainerSpec
from workers.trainers.interface import (EVAL_COLUMNS, STEP_COLUMNS, Context, Outcome, TrainerLoadError, Trial, TrialError, outcome_of,
                                        resolve_workdir)

__all__ = ["CommandTrainer", "PLACEHOLDERS", "argv_for", "check_command"]

log = logging.getLogger(__name__)

# {placeholders} a command line may use: the files and directories, and the trial's scalar fields.
PLACEHOLDERS = ("trial_json", "output_dir", "checkpoint_dir", "stem_dir", "trial_id", "seed", "n_params", "tokens",
                "lr", "batch_tokens", "steps", "size", "start_step", "role", "stem_id", "device", "threads")
_STDERR_TAIL = 20  # lines of the command's stderr quoted in a FAILED row's error

# The watcher: reparented when the worker dies (its parent pid changes), it ends the command's
# process group: SIGTERM, then SIGKILL after a grace period. It exits once the group is gone.
_WATCHER = """
import os, signal, sys, time
parent, group = int(sys.argv[1]), int(sys.argv[2])
def alive():
    try:
        os.killpg(group, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
while alive():
    if os.getppid() != parent:
        try:
            os.killpg(group, signal.SIGTERM)
            time.sleep(5)
            os.killpg(group, signal.SIGKILL)
        except ProcessLookupError:
            pass
        break
    time.sleep(0.2)
"""


def _split(command: str | tuple[str, ...]) -> list[str]:
    try:
        return shlex.split(command) if isinstance(command, str) else list(command)
    except ValueError as e:  # unbalanced quotes
        raise TrainerLoadError(f"trainer.command: {command!r}: {e} (expected a command line as a shell splits it)") \
            from None


def check_command(spec: TrainerSpec, workdir: str, models: list[dict] | None = None) -> None:
    """Raise TrainerLoadError unless the command's program exists and its placeholders are known:
    {settings.KEY} in trainer.settings and {model.KEY} in every size's settings of ``models`` (a
    ladder's; None: a size hook's, known only when it is called)."""
    argv = _split(spec.command)
    formatter = string.Formatter()
    for arg in argv:
        try:
            names = [f for _, f, _, _ in formatter.parse(arg) if f is not None]
        except ValueError as e:
            raise TrainerLoadError(f"trainer.command: {arg!r}: {e} (write {{{{ and }}}} for literal braces)") from None
        for name in names:
            head, dot, key = name.partition(".")
            if not (name in PLACEHOLDERS or head in ("model", "settings") and dot and key.isidentifier()):
                raise TrainerLoadError(f"trainer.command: unknown placeholder {{{name}}} (expected one of "
                                       f"{', '.join(PLACEHOLDERS)}, or model.KEY / settings.KEY)")
            known = [spec.settings] if head == "settings" else (models or []) if head == "model" else []
            missing = [i for i, m in enumerate(known) if key not in m]
            if missing:
                where = "trainer.settings" if head == "settings" else f"model.ladder[{missing[0]}].settings"
                raise TrainerLoadError(f"trainer.command: placeholder {{{name}}}: {where} has no {key!r}")
    program = argv[0]
    where = resolve_workdir(workdir)
    if os.sep in program or (os.altsep and os.altsep in program):
        path = os.path.join(where, program)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise TrainerLoadError(f"trainer.command: {program} not found or not executable in {where}")
    elif shutil.which(program) is None:
        raise TrainerLoadError(f"trainer.command: {program!r} not found on PATH (expected a program, e.g. python)")


class _Placeholders(string.Formatter):
    """Fills {name} from the trial's fields and files, and {model.KEY} / {settings.KEY} from the
    size's settings and the trainer's settings (``--n_layer={model.n_layer}``); nothing else."""

    def __init__(self, trial: Trial, paths: dict[str, str]):
        self.values = {k: v for k, v in asdict(trial).items() if k in PLACEHOLDERS} | paths
        self.maps = {"model": trial.model, "settings": trial.settings}

    def get_field(self, field_name, args, kwargs):
        head, dot, key = field_name.partition(".")
        if dot and head in self.maps:
            if key not in self.maps[head]:
                raise TrialError(f"trainer.command: placeholder {{{field_name}}}: the trial's {head} has no {key!r} "
                                 f"(it has {', '.join(sorted(self.maps[head])) or 'nothing'})")
            return self.maps[head][key], field_name
        return self.values[field_name], field_name


def argv_for(spec: TrainerSpec, trial: Trial, paths: dict[str, str]) -> list[str]:
    """The command line with its placeholders filled in from the trial and its files."""
    fill = _Placeholders(trial, paths)
    return [fill.format(arg) for arg in _split(spec.command)]


def _stem_want(trial: Trial) -> int:
    """The latest stem step a trial can start from: a segment's last but one, a branch's start."""
    return trial.steps - 1 if trial.role == "stem" else trial.start_step


def _untar(data: bytes, root: str) -> None:
    """Unpack a workspace copy into ``root``: regular files and folders only, none outside it."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = tar.getmembers()
        for m in members:
            parts = m.name.split("/")
            if m.name.startswith("/") or ".." in parts or not (m.isfile() or m.isdir()):
                raise ValueError(f"unexpected member {m.name!r}")
        tar.extractall(root, members=members)


class _Workspace:
    """The command's directories: the store's own on a local results directory, else local copies
    synced with the store around the command."""

    def __init__(self, ctx: Context):
        self.ctx, store, tid = ctx, ctx._store, ctx.trial.trial_id
        self.local = isinstance(store.fs, pafs.LocalFileSystem)
        self.blob = f"checkpoints/{tid}.run.tar"
        if self.local:
            self.root = f"{store.root}/checkpoints/{tid}.run"
        else:
            self.root = tempfile.mkdtemp(prefix=f"scalesweep-{tid}-")
            data = store.read_bytes(self.blob)
            if data is not None:
                try:
                    _untar(data, self.root)
                except (tarfile.TarError, ValueError, OSError) as e:  # a damaged copy: start over, never fail on it
                    log.warning("trial %s: ignoring unusable workspace %s/%s (%s); the command starts from step 0",
                                tid, store.uri, self.blob, e)
                    shutil.rmtree(self.root, ignore_errors=True)
                    os.makedirs(self.root)
        self.output, self.checkpoint = f"{self.root}/output", f"{self.root}/checkpoint"
        for d in (self.output, self.checkpoint):
            os.makedirs(d, exist_ok=True)
        if not os.listdir(self.checkpoint):  # nothing to resume from: the rows start over too
            shutil.rmtree(self.output)
            os.makedirs(self.output)
        if os.path.exists(f"{self.output}/result.json"):  # written by this attempt or not at all
            os.remove(f"{self.output}/result.json")
        for name in ("metrics.jsonl", "evals.jsonl"):
            _cut_partial_line(f"{self.output}/{name}")
        self.stem_before: set[str] = set()
        reuses = ctx.trial.role == "stem" or ctx.trial.start_step > 0  # a stem segment or a branch
        self.stem = self._stem_dir(ctx.trial) if reuses else ""

    def _stem_dir(self, trial: Trial) -> str:
        store = self.ctx._store
        if self.local:
            path = f"{store.root}/checkpoints/{trial.stem_id}"
        else:  # the latest state at or before where this trial starts: the one it can use
            path = f"{self.root}/stem"
            os.makedirs(path, exist_ok=True)
            have = [s for s in self.ctx.stem_steps() if s <= _stem_want(trial)]
            if have:
                data = store.read_bytes(f"checkpoints/{trial.stem_id}/{have[-1]}.pt")
                if data is not None:
                    with open(f"{path}/{have[-1]}.pt", "wb") as f:
                        f.write(data)
        os.makedirs(path, exist_ok=True)
        self.stem_before = set(os.listdir(path))
        return path

    def started_tokens(self, trial: Trial) -> int:
        """Tokens of the stem state this trial can start from (where its own computation begins;
        as Context.save_stem counts a step's tokens)."""
        want = _stem_want(trial)
        have = [int(n[:-3]) for n in self.stem_before if n.endswith(".pt") and n[:-3].isdigit() and int(n[:-3]) <= want]
        return max(have, default=0) * trial.tokens // max(1, trial.steps) if self.stem else 0

    def sync(self) -> None:
        """Object storage: upload the checkpoint and rows (for a retry) and new stem states."""
        if self.local:
            return
        store, buf = self.ctx._store, io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(self.checkpoint, "checkpoint")
            for name in ("metrics.jsonl", "evals.jsonl"):
                if os.path.exists(f"{self.output}/{name}"):
                    tar.add(f"{self.output}/{name}", f"output/{name}")
        store.write_bytes(self.blob, buf.getvalue())
        if self.stem:
            for name in sorted(set(os.listdir(self.stem)) - self.stem_before):
                if name.endswith(".pt") and name[:-3].isdigit():
                    with open(f"{self.stem}/{name}", "rb") as f:
                        store.write_bytes(f"checkpoints/{self.ctx.trial.stem_id}/{name}", f.read())

    def close(self) -> None:
        if not self.local:
            shutil.rmtree(self.root, ignore_errors=True)


class CommandTrainer:
    """``fn(trial, ctx)`` for a command (see the module docstring)."""

    def __init__(self, spec: TrainerSpec, workdir: str = "", relative: str = ""):
        self.spec, self.workdir = spec, resolve_workdir(workdir, relative)

    def __call__(self, trial: Trial, ctx: Context) -> Outcome:
        ws = _Workspace(ctx)
        try:
            trial_json = f"{ws.root}/trial.json"
            with open(trial_json, "w") as f:
                f.write(trial.to_json())
            paths = {"trial_json": trial_json, "output_dir": ws.output, "checkpoint_dir": ws.checkpoint,
                     "stem_dir": ws.stem}
            env = dict(os.environ, SCALESWEEP_TRIAL=trial_json, SCALESWEEP_OUTPUT=ws.output,
                       SCALESWEEP_CHECKPOINT_DIR=ws.checkpoint, SCALESWEEP_STEM_DIR=ws.stem)
            ctx.begin_at(ws.started_tokens(trial))
            try:
                code, tail = self._run(argv_for(self.spec, trial, paths), env)
            finally:
                ws.sync()
            return self._outcome(trial, ctx, ws.output, code, tail)
        finally:
            ws.close()

    def _run(self, argv: list[str], env: dict) -> tuple[int, list[str]]:
        """Run ``argv`` in its own process group; (exit status, last stderr lines)."""
        try:
            proc = subprocess.Popen(argv, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except OSError as e:
            raise TrialError(f"trainer.command: cannot start {argv[0]!r} in {self.workdir} ({e.strerror})") from None
        _on_start(proc)
        # Its own session too: whatever ends the worker's process group does not end the watcher with it.
        watcher = subprocess.Popen([sys.executable, "-S", "-c", _WATCHER, str(os.getpid()), str(proc.pid)],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        tail: collections.deque[str] = collections.deque(maxlen=_STDERR_TAIL)
        reader = threading.Thread(target=_tee, args=(proc.stderr, tail), daemon=True)
        reader.start()
        try:
            code = proc.wait()
        finally:  # ended, cancelled (KeyboardInterrupt from Ray) or anything else: so is what it left running,
            _kill_group(proc.pid)  # which would otherwise hold its stderr open
            reader.join(timeout=5)
            watcher.kill()
            watcher.wait()
        return code, list(tail)

    def _outcome(self, trial: Trial, ctx: Context, output: str, code: int, tail: list[str]) -> Outcome:
        stderr = "".join(f"\n  | {line}" for line in tail)
        stderr = f"\nlast stderr lines of {' '.join(_split(self.spec.command))}:{stderr}" if tail else ""
        if code != 0:
            how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
            raise TrialError(f"trainer.command {how}: {' '.join(_split(self.spec.command))}{stderr}")
        try:
            for row in _read_metrics(f"{output}/metrics.jsonl"):
                wall = row.pop("wall_s", None)  # the command's own clock; unknown where it reports none
                ctx.report(**row)
                ctx.rows[-1]["wall_s"] = float(wall) if isinstance(wall, (int, float)) and not isinstance(wall, bool) \
                    else None
                if "energy_j" not in row:  # read after the command ended: the energy now is not the row's
                    ctx.rows[-1]["energy_j"] = None
            _report_evals(ctx, f"{output}/evals.jsonl")
            result = f"{output}/result.json"
            try:
                with open(result) as f:
                    data = json.load(f)
            except FileNotFoundError:
                raise TrialError(f"{result}: missing (the command exited 0 without writing it; expected "
                                 '{"n_params": ..., "eval_loss": ...})') from None
            except (ValueError, UnicodeDecodeError) as e:
                raise TrialError(f"{result}: not JSON ({e})") from None
            if isinstance(data, dict) and "n_params" not in data:
                raise TrialError(f"{result}: no n_params (expected the exact parameter count the command trained)")
            return outcome_of(data, result)
        except TrialError as e:
            raise TrialError(f"{e}{stderr}") from None


# Called with each command's process once it has started. A no-op; the contract suite
# (scalesweep.testing) replaces it to interrupt a command as a preemption would.
_on_start: Callable[[subprocess.Popen], None] = lambda proc: None


def _tee(stream, tail: collections.deque) -> None:
    """Copy the command's stderr to this worker's (the trial's log), keeping its last lines."""
    out = getattr(sys.stderr, "buffer", None)
    for line in iter(stream.readline, b""):
        if out is not None:
            out.write(line)
            out.flush()
        tail.append(line.decode(errors="replace").rstrip("\n"))
    stream.close()


def _cut_partial_line(path: str) -> None:
    """Drop a last line without its newline (an attempt killed mid-write), so that the rows a
    resumed command appends start on a line of their own."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _json_lines(path: str):
    """(line number, object) of each non-blank line of ``path``; TrialError naming a line that is not an object."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().splitlines(keepends=True)
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise TrialError(f"{path}:{i}: not a JSON object ({e}): {line[:200]!r}") from None
        if not isinstance(row, dict):
            raise TrialError(f"{path}:{i}: expected a JSON object per line (got {type(row).__name__})")
        yield i, row


def _report_evals(ctx: Context, path: str) -> None:
    """The task evaluations a command wrote to ``evals.jsonl`` (module docstring), through the
    context (a later line for the same step and task replaces an earlier one)."""
    if not os.path.exists(path):
        return
    fields = EVAL_COLUMNS  # the first five required
    for i, row in _json_lines(path):
        unknown = sorted(set(row) - set(fields))
        missing = [k for k in fields[:5] if k not in row]
        if unknown or missing:
            what = f"unknown field {unknown[0]!r}" if unknown else f"no {', '.join(missing)}"
            raise TrialError(f"{path}:{i}: {what} (expected {', '.join(fields)})")
        try:
            ctx.report_task(**row)
        except TrialError as e:
            raise TrialError(f"{path}:{i}: {str(e).removeprefix('task evaluation: ').removeprefix('progress row: ')}") from None


def _read_metrics(path: str) -> list[dict]:
    """The rows of ``metrics.jsonl``, a later row with a step already seen replacing the earlier
    one (a resumed command reports again from its checkpoint). Raises TrialError naming the line."""
    if not os.path.exists(path):
        return []
    rows: dict[int, dict] = {}
    for i, row in _json_lines(path):
        missing = [k for k in ("step", "tokens") if k not in row]
        if missing or not ("train_loss" in row or "eval_loss" in row):
            what = ", ".join(missing) if missing else "train_loss or eval_loss"
            raise TrialError(f"{path}:{i}: no {what} (expected at least step, tokens and train_loss or eval_loss)")
        for k, v in row.items():
            if k in ("step", "tokens") or (v is None and k in STEP_COLUMNS):
                continue
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                what = "a number or null" if k in STEP_COLUMNS else "a number: extra fields become step columns"
                raise TrialError(f"{path}:{i}: {k}={v!r} (expected {what})")
        if any(isinstance(row[k], bool) or not isinstance(row[k], int) for k in ("step", "tokens")):
            raise TrialError(f"{path}:{i}: step and tokens must be whole numbers (got {row['step']!r}, "
                             f"{row['tokens']!r})")
        rows[row["step"]] = row
    return [rows[s] for s in sorted(rows)]
