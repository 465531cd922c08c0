"""Data sources, the held-out split and deterministic sampling."""

import numpy as np
import pytest

from workers.config import DataConfig
from workers.gpt.data import DataError, load_corpus


@pytest.fixture
def text_dir(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        (d / f"f{i}.txt").write_bytes(bytes(rng.integers(32, 127, 20000, dtype=np.uint8)))
    return d


def corpus(tmp_path, **kw):
    """The corpus of one source in ``kw``, in 1024-token blocks of which 1 in 10 is held out."""
    return load_corpus(DataConfig(block_tokens=1024, eval_fraction=0.1, **kw), str(tmp_path / "cache"))


def test_text_directory_is_read_as_bytes(tmp_path, text_dir):
    c = corpus(tmp_path, text=str(text_dir))
    assert c.vocab_size == 256 and len(c.tokens) == 60000
    assert bytes(c.tokens[:20000]) == (text_dir / "f0.txt").read_bytes()


def test_split_is_disjoint_and_batches_never_touch_eval(tmp_path, text_dir):
    c = corpus(tmp_path, text=str(text_dir))
    assert set(c.train_blocks).isdisjoint(c.eval_blocks) and len(c.eval_blocks) >= 1
    eval_mask = np.zeros(len(c.tokens), bool)
    for b in c.eval_blocks:
        eval_mask[b * 1024 : (b + 1) * 1024] = True
    rng_positions = []
    for step in range(50):
        rng = np.random.default_rng([3, step])
        blocks = c.train_blocks[rng.integers(0, len(c.train_blocks), 8)]
        offs = rng.integers(0, 1024 - 32, 8)
        rng_positions.extend(blocks * 1024 + offs)
    for start in rng_positions:
        assert not eval_mask[start : start + 33].any()


def test_batches_depend_only_on_seed_and_step(tmp_path, text_dir):
    c = corpus(tmp_path, text=str(text_dir))
    x1, y1 = c.batch(seed=1, step=7, batch_size=4, seq_len=16)
    x2, y2 = c.batch(seed=1, step=7, batch_size=4, seq_len=16)
    x3, _ = c.batch(seed=2, step=7, batch_size=4, seq_len=16)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2) and not np.array_equal(x1, x3)
    assert np.array_equal(x1[:, 1:], y1[:, :-1])  # targets are inputs shifted by one


def test_eval_batches_are_fixed(tmp_path, text_dir):
    c = corpus(tmp_path, text=str(text_dir))
    a = [x for x, _ in c.eval_batches(512, 4, 16)]
    b = [x for x, _ in c.eval_batches(512, 4, 16)]
    assert sum(x.size for x in a) == 512 and all(np.array_equal(p, q) for p, q in zip(a, b))


def test_token_files_npy_and_bin(tmp_path):
    arr = (np.arange(50000) % 1000).astype(np.uint16)
    np.save(tmp_path / "t.npy", arr)
    arr.tofile(tmp_path / "t.bin")
    a = corpus(tmp_path, tokens=str(tmp_path / "t.npy"))
    b = corpus(tmp_path, tokens=str(tmp_path / "t.bin"), dtype="uint16")
    assert a.vocab_size == b.vocab_size == 1000
    assert a.fingerprint == b.fingerprint and np.array_equal(a.tokens, b.tokens)


def test_npy_with_objects_is_refused(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="data.tokens"):
        corpus(tmp_path, tokens=str(tmp_path / "o.npy"))


@pytest.mark.parametrize("kind", ["missing_text", "empty_text", "missing_tokens", "tiny"])
def test_bad_data_gets_a_named_error(tmp_path, kind):
    if kind == "missing_text":
        source = {"text": str(tmp_path / "nope" / "*.txt")}
    elif kind == "empty_text":
        (tmp_path / "empty.txt").write_bytes(b"")
        source = {"text": str(tmp_path / "empty.txt")}
    elif kind == "missing_tokens":
        source = {"tokens": str(tmp_path / "nope.bin")}
    else:
        (tmp_path / "small.txt").write_bytes(b"x" * 1500)
        source = {"text": str(tmp_path / "small.txt")}
    with pytest.raises(DataError, match=r"data\.(text|tokens)"):
        corpus(tmp_path, **source)


def test_stdlib_corpus_is_tens_of_megabytes(cache_dir):
    c = load_corpus(DataConfig(builtin="python-stdlib"), cache_dir)
    assert 5e6 < len(c.tokens) < 2e8
    assert b"def " in bytes(c.tokens[:200000])
