"""Training data: three sources, one memory-mapped token array, a fixed held-out split.

Sources (the ``data:`` settings, :class:`workers.config.DataConfig`):
- ``builtin: python-stdlib``: the running interpreter's standard library source (.py files,
  sorted paths, site-packages excluded), read as bytes. Every machine has it, so the
  quickstart needs no download. It is written once to a cache file and memory-mapped.
- ``text``: a file, a directory (recursively) or a glob, read as bytes in sorted path order.
- ``tokens``: a pre-tokenised array, ``.npy`` or raw ``.bin`` with a dtype, memory-mapped as is
  (the usual format on clusters; nanoGPT's ``train.bin``).

Split: the array is cut into blocks of ``block_tokens``; every ``eval_every``-th block
(``eval_every`` = 1 / ``eval_fraction``, at least 2) is held out for evaluation and never
trained on. Interleaving keeps the held-out text representative of the whole corpus (a tail
split of a sorted corpus would be one package).

Sampling: the batch at optimiser step ``k`` for seed ``s`` depends only on (s, k), through
``SeedSequence([s, k])``. Models of every size in a sweep see the same batches in the same
order, which removes data order from the comparison between sizes, and a trial resumed at
step k draws exactly what an uninterrupted run would have drawn.
"""

from __future__ import annotations

import glob
import hashlib
import os
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from workers.config import DataConfig

__all__ = ["Corpus", "DataError", "load_corpus"]

BYTE_VOCAB = 256


class DataError(ValueError):
    """The data named by a spec cannot be used; the message names the path and the problem."""


@dataclass(frozen=True)
class Corpus:
    tokens: np.ndarray  # 1-D memmap
    vocab_size: int
    fingerprint: str  # content identity: enters trial ids
    train_blocks: np.ndarray
    eval_blocks: np.ndarray
    block_tokens: int

    def batch(self, seed: int, step: int, batch_size: int, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) int64 arrays of shape (batch_size, seq_len) for optimiser step ``step``."""
        rng = np.random.default_rng([seed, step])
        blocks = self.train_blocks[rng.integers(0, len(self.train_blocks), batch_size)]
        offsets = rng.integers(0, self.block_tokens - seq_len, batch_size)
        starts = blocks * self.block_tokens + offsets
        idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
        chunk = np.asarray(self.tokens[idx], dtype=np.int64)
        return np.ascontiguousarray(chunk[:, :-1]), np.ascontiguousarray(chunk[:, 1:])

    def eval_batches(self, n_tokens: int, batch_size: int, seq_len: int):
        """A fixed sequence of held-out batches covering about ``n_tokens`` tokens."""
        per_block = (self.block_tokens - 1) // seq_len
        starts = (self.eval_blocks[:, None] * self.block_tokens + np.arange(per_block)[None, :] * seq_len).ravel()
        starts = starts[: max(1, n_tokens // seq_len)]
        for i in range(0, len(starts), batch_size):
            idx = starts[i : i + batch_size, None] + np.arange(seq_len + 1)[None, :]
            chunk = np.asarray(self.tokens[idx], dtype=np.int64)
            yield chunk[:, :-1], chunk[:, 1:]


def _cache_dir(cache_dir: str) -> Path:
    d = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "scalesweep"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _stdlib_files() -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("site-packages", "dist-packages", "__pycache__"))
        files.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(".py"))
    return files


def _text_files(spec: str) -> list[Path]:
    p = Path(spec).expanduser()
    if p.is_file():
        return [p]
    if p.is_dir():
        return sorted(f for f in p.rglob("*") if f.is_file())
    matches = sorted(Path(m) for m in glob.glob(str(p), recursive=True))
    files = [m for m in matches if m.is_file()]
    if not files:
        raise DataError(f"data.text: {spec!r} matches no file (expected a file, a directory or a glob)")
    return files


def _materialise_bytes(files: list[Path], name: str, cache_dir: str) -> tuple[Path, str]:
    """Concatenate ``files`` into one cached byte file; returns (path, content fingerprint).

    The cache key is the list of (path, size, mtime); the fingerprint is a hash of the bytes,
    so two machines with the same text agree on trial ids.
    """
    key = hashlib.sha256()
    for f in files:
        st = f.stat()
        key.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    stem = f"{name}-{key.hexdigest()[:16]}"
    cache = _cache_dir(cache_dir)
    out, fp_file = cache / f"{stem}.bin", cache / f"{stem}.sha256"
    if out.exists() and fp_file.exists():
        return out, fp_file.read_text().strip()
    content = hashlib.sha256()
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".tmp-")
    with os.fdopen(fd, "wb") as fh:
        for f in files:
            data = f.read_bytes()
            content.update(data)
            fh.write(data)
    fingerprint = content.hexdigest()[:16]
    os.replace(tmp, out)  # atomic: concurrent workers may race to build the same file
    fp_tmp = cache / f".tmp-{stem}-{os.getpid()}.sha256"
    fp_tmp.write_text(fingerprint)
    os.replace(fp_tmp, fp_file)
    return out, fingerprint


def _split(n_tokens: int, cfg: DataConfig, where: str) -> tuple[np.ndarray, np.ndarray]:
    n_blocks = n_tokens // cfg.block_tokens
    if n_blocks < 2:
        raise DataError(
            f"{where}: {n_tokens} tokens is too little data (expected at least {2 * cfg.block_tokens}, "
            f"two blocks of block_tokens={cfg.block_tokens})"
        )
    ids = np.arange(n_blocks)
    is_eval = (ids % cfg.eval_every) == (cfg.eval_every - 1)
    if not is_eval.any():  # small corpora: hold out the last block
        is_eval[-1] = True
    return ids[~is_eval], ids[is_eval]


@lru_cache(maxsize=4)
def load_corpus(cfg: DataConfig, cache_dir: str = "") -> Corpus:
    """Open the corpus named by ``cfg`` (cached per process: Ray reuses worker processes).

    ``cache_dir`` is where byte corpora are materialised ("" = ~/.cache/scalesweep).
    """
    if cfg.builtin is not None:  # "python-stdlib", the one built-in corpus
        path, fp = _materialise_bytes(_stdlib_files(), f"python-stdlib-{sys.version_info[0]}.{sys.version_info[1]}",
                                      cache_dir)
        tokens, vocab, where = np.memmap(path, dtype=np.uint8, mode="r"), BYTE_VOCAB, "data.builtin"
    elif cfg.text is not None:
        files = _text_files(cfg.text)
        path, fp = _materialise_bytes(files, "text", cache_dir)
        if path.stat().st_size == 0:
            raise DataError(f"data.text: {cfg.text!r} is empty (expected some bytes of text)")
        tokens, vocab, where = np.memmap(path, dtype=np.uint8, mode="r"), BYTE_VOCAB, "data.text"
    else:  # DataConfig holds exactly one source
        tokens, vocab, fp = _open_tokens(cfg)
        where = "data.tokens"
    train, held = _split(len(tokens), cfg, where)
    return Corpus(tokens, vocab, fp, train, held, cfg.block_tokens)


def _open_tokens(cfg: DataConfig) -> tuple[np.ndarray, int, str]:
    path = Path(cfg.tokens).expanduser()
    if not path.is_file():
        raise DataError(f"data.tokens: {cfg.tokens!r} does not exist (expected a .npy or .bin token file)")
    try:
        if path.suffix == ".npy":
            # allow_pickle=False: a .npy is user input and must not execute code.
            tokens = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            tokens = np.memmap(path, dtype=np.dtype(cfg.dtype), mode="r")
    except (ValueError, OSError) as e:
        raise DataError(f"data.tokens: cannot read {cfg.tokens!r} ({e})") from e
    if tokens.ndim != 1 or tokens.dtype.kind not in "ui":
        raise DataError(f"data.tokens: {cfg.tokens!r} has shape {tokens.shape} and dtype {tokens.dtype} (expected a 1-D integer array)")
    vocab = cfg.vocab_size or int(tokens.max()) + 1
    # Fingerprint from size and samples of the content: hashing terabytes is not an option.
    h = hashlib.sha256(f"{tokens.dtype}:{len(tokens)}".encode())
    for start in np.linspace(0, max(0, len(tokens) - 4096), 64).astype(np.int64):
        h.update(np.ascontiguousarray(tokens[start : start + 4096]).tobytes())
    return tokens, vocab, h.hexdigest()[:16]
