"""Multiple-choice task evaluations: the JSONL loader, the scorer, and the built-in tasks cut
from held-out text (workers.evals.tasks, .scoring, .builtin). No Ray; a few seconds."""

from __future__ import annotations

import json
import math
import random
import re
import sysconfig
import textwrap
from pathlib import Path

import pytest
import torch

from workers.evals.builtin import BUILTIN_TASKS, MIN_ITEMS, builtin_task
from workers.evals.scoring import byte_encoder, encode_task, score
from workers.evals.tasks import HARNESS_DELIMITER, Item, Task, TaskError, load_task_file
from workers.gpt.arch import shape_for_params
from workers.gpt.model import build_model

BLOCK = 8192
STDLIB_MODULES = ("argparse.py", "dataclasses.py", "typing.py", "textwrap.py", "functools.py", "enum.py",
                  "inspect.py", "pathlib.py", "subprocess.py", "logging/__init__.py")


@pytest.fixture(scope="module")
def code_blocks() -> list[str]:
    """Blocks of real Python source, cut as the corpus cuts its held-out blocks."""
    root = Path(sysconfig.get_paths()["stdlib"])
    text = "".join((root / m).read_bytes().decode("utf-8", errors="replace") for m in STDLIB_MODULES
                   if (root / m).exists())
    blocks = [text[i:i + BLOCK] for i in range(0, len(text) - BLOCK + 1, BLOCK)]
    assert len(blocks) >= 20, "the test needs some stdlib source"
    return blocks


def prose_blocks(n_words: int = 12000) -> list[str]:
    """Wrapped English-like prose: no code, few brackets."""
    rng = random.Random(1)
    syllables = "ka lo mi ra te su ne vi do pa li ro fe gu ma si".split()
    vocab = sorted({"".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(200)})
    weights = [1 / (r + 1) for r in range(len(vocab))]  # Zipf: a few very common words, many rare
    sentences = []
    while sum(len(s.split()) for s in sentences) < n_words:
        words = rng.choices(vocab, weights, k=rng.randint(6, 16))
        sentences.append(" ".join(words).capitalize() + ".")
    text = textwrap.fill(" ".join(sentences), width=64) + "\n"
    return [text[i:i + BLOCK] for i in range(0, len(text), BLOCK)]


def check_items(task: Task, max_chars: int) -> None:
    assert task.items
    for it in task.items:
        assert len(it.choices) >= 2
        assert 0 <= it.gold < len(it.choices)
        assert len(set(it.choices)) == len(it.choices), it
        assert len(it.context) + max(map(len, it.choices)) <= max_chars, it
        assert it.context and all(it.choices)


# -- built-in tasks ----------------------------------------------------------------------------

@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_builtin_task_is_determined_by_its_seed(code_blocks, name):
    a = builtin_task(name, code_blocks, n_items=150, seed=0)
    b = builtin_task(name, list(code_blocks), n_items=150, seed=0)
    c = builtin_task(name, code_blocks, n_items=150, seed=1)
    assert a == b
    assert a.items != c.items
    assert len(a.items) == 150 and a.name == name
    check_items(a, 100)
    assert all(len(it.choices) == 4 for it in a.items)
    assert abs(a.chance - 0.25) < 1e-12
    # the gold's position is spread over the choices, not always one place
    assert len({it.gold for it in a.items}) == 4


@pytest.mark.parametrize("name", BUILTIN_TASKS)
def test_builtin_items_fit_a_smaller_max_chars(code_blocks, name):
    check_items(builtin_task(name, code_blocks, n_items=100, max_chars=64), 64)


def test_builtin_tasks_have_no_length_shortcut(code_blocks):
    """identifier and next_line choices are length-matched: length alone never tells."""
    for name in ("identifier", "next_line"):
        for it in builtin_task(name, code_blocks, n_items=150).items:
            assert len({len(c) for c in it.choices}) == 1, it
    for it in builtin_task("brackets", code_blocks, n_items=150).items:
        # every choice ends as the gold does: same terminator, only the closing run differs
        tail = it.choices[it.gold].lstrip(")]}")
        assert all(c.lstrip(")]}") == tail for c in it.choices), it


def test_builtin_tasks_on_prose_degrade_to_fewer_items_or_a_clear_error():
    blocks = prose_blocks()
    made = {}
    for name in BUILTIN_TASKS:
        try:
            made[name] = builtin_task(name, blocks, n_items=300)
        except TaskError as e:
            msg = str(e)
            assert "\n" not in msg and name in msg and "fewer than" in msg
            continue
        check_items(made[name], 100)
        assert MIN_ITEMS <= len(made[name].items) <= 300
    assert "identifier" in made  # repeated words exist in any text
    with pytest.raises(TaskError, match="brackets"):
        builtin_task("brackets", blocks)  # prose without brackets has none to close
    with pytest.raises(TaskError, match="indent: the text yields 0 items"):
        builtin_task("indent", blocks)  # nor indentation to predict


def _depth(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def test_indent_choices_differ_only_in_their_indentation(code_blocks):
    task = builtin_task("indent", code_blocks, n_items=300)
    assert len(task.items) == 300
    for it in task.items:
        assert it.context.endswith("\n") and len(it.choices) == 4 and 0 <= it.gold < 4
        heads = {c.lstrip(" ") for c in it.choices}
        assert len(heads) == 1 and "\n" not in heads.pop(), it  # the same first character
        depths = [_depth(c) for c in it.choices]
        assert min(depths) >= 0 and all(b - a == 4 for a, b in zip(depths, depths[1:])), it
        # the window holds the depth of the line before (the context shows it from its start)
        prev = [line for line in it.context.split("\n") if line.strip()][-1]
        assert _depth(prev) in depths and not prev.startswith("\t"), it


def test_indent_is_not_solved_by_a_rule_blind_to_the_line_before(code_blocks):
    """The kinds come a third each, and neither the shallowest, the deepest, the second choice
    nor "as deep as the line before" gets much above chance; the line before's kind does."""
    items = builtin_task("indent", code_blocks, n_items=300).items
    by_place = [sum(it.gold == k for it in items) / len(items) for k in range(4)]
    assert max(by_place) < 0.36 and min(by_place) > 0.15, by_place
    kinds = {"indent": 0, "dedent": 0, "same": 0}
    previous = 0
    for it in items:
        prev = [line for line in it.context.split("\n") if line.strip()][-1]
        gold, before = _depth(it.choices[it.gold]), _depth(prev)
        previous += gold == before
        body = prev.strip()
        kind = "indent" if body.endswith(":") else "same" if gold == before else "dedent"
        kinds[kind] += 1
        assert gold - before == {"indent": 4, "same": 0, "dedent": gold - before}[kind], it
        assert kind != "dedent" or body.split()[0].rstrip(";") in ("return", "pass", "raise", "continue",
                                                                     "break") and before - gold in (4, 8), it
    assert previous / len(items) < 0.4
    assert all(80 <= n <= 120 for n in kinds.values()), kinds


def test_indent_skips_tab_indented_code(code_blocks):
    tabbed = [re.sub(r"(?m)^(?:    )+", lambda m: "\t" * (len(m.group()) // 4), b) for b in code_blocks]
    with pytest.raises(TaskError, match="indent: the text yields [0-9] items"):  # a few odd lines left
        builtin_task("indent", tabbed)


def test_builtin_task_settings_are_checked(code_blocks):
    with pytest.raises(TaskError, match="unknown.*brackets, indent, identifier, next_line"):
        builtin_task("lambada", code_blocks)
    with pytest.raises(TaskError, match="max_chars"):
        builtin_task("brackets", code_blocks, max_chars=10)
    with pytest.raises(TaskError, match="n_items"):
        builtin_task("brackets", code_blocks, n_items=0)
    with pytest.raises(TaskError, match="yields 0 items"):
        builtin_task("next_line", ["no newline here at all " * 50])


def test_untrained_models_score_about_chance(code_blocks):
    torch.manual_seed(0)
    model = build_model(shape_for_params(20e3, 256, 128)).eval()
    for name in BUILTIN_TASKS:
        enc = encode_task(builtin_task(name, code_blocks, n_items=200), byte_encoder, 128)
        m = score(enc, lambda x: model(x)[0])
        # brackets' choices differ in length; an untrained model slightly prefers the shorter
        assert abs(m["acc"] - m["chance"]) < 0.15, (name, m)
        assert 7.4 < m["task_bpb"] < 8.5  # an untrained byte model: about log2(256) bits (indent: 7.48)
        uniform = score(enc, lambda x: torch.zeros(*x.shape, 256))
        # ties count as wrong; a uniform model picks the shortest choice, which is no shortcut
        assert uniform["acc"] < uniform["chance"] + 0.1
        assert uniform["task_bpb"] == pytest.approx(8.0)


# -- the JSONL loader (workers.evals.tasks) ---------------------------------------------------

def write_jsonl(path: Path, docs) -> str:
    path.write_text("".join((d if isinstance(d, str) else json.dumps(d)) + "\n" for d in docs))
    return str(path)


def test_loader_reads_the_projects_field_names_exactly(tmp_path):
    p = write_jsonl(tmp_path / "brackets.jsonl", [{"context": "x = (1 + (2", "choices": ["))", ")"], "gold": 0},
                                                  {"context": "a ", "choices": ["b", "c", "d"], "gold": 2}])
    task = load_task_file(p)
    assert task.name == "brackets"
    assert task.items == (Item("x = (1 + (2", ("))", ")"), 0), Item("a ", ("b", "c", "d"), 2))
    assert task.chance == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert len(load_task_file(p, limit=1).items) == 1


def test_loader_reads_harness_field_names_with_its_delimiter(tmp_path):
    p = write_jsonl(tmp_path / "h.jsonl", [
        {"query": "The sky is", "choices": ["blue", "green"], "gold": 0},
        {"ctx": "A man sits.", "endings": ["He stands.", "It rains."], "label": "1"},
        {"goal": "Open a jar:", "options": ["twist the lid", "eat it"], "answer": "twist the lid"},
        {"question": "Ends in space ", "choices": ["a", "b"], "gold": 1},
    ], )
    items = load_task_file(p, name="harness").items
    assert items[0] == Item("The sky is", (HARNESS_DELIMITER + "blue", HARNESS_DELIMITER + "green"), 0)
    assert items[1].gold == 1 and items[1].choices[0] == " He stands."
    assert items[2].gold == 0
    assert items[3].choices == ("a", "b")  # the context already ends in whitespace


def test_loader_reads_arc_style_choices_with_an_answer_key(tmp_path):
    doc = {"question": "Which is a gas?", "choices": {"text": ["ice", "steam", "rock", "wood"],
                                                      "label": ["A", "B", "C", "D"]}, "answerKey": "B"}
    numbered = dict(doc, choices={"text": ["ice", "steam"], "label": ["1", "2"]}, answerKey="2")
    items = load_task_file(write_jsonl(tmp_path / "arc.jsonl", [doc, numbered])).items
    assert items[0].gold == 1 and items[0].choices[1] == " steam"
    assert items[1].gold == 1  # label "2", not index 2


@pytest.mark.parametrize("bad, match", [
    ('{"context": "x", "choices": ["a", "b"], "gold": 0', "not a JSON object"),
    ({"context": "x", "choices": ["a", "b"], "gold": 2}, "out of range"),
    ({"context": "x", "choices": ["a", "b"], "gold": -1}, "out of range"),
    ({"context": "x", "choices": ["a"], "gold": 0}, "1 choice.*at least 2"),
    ({"context": "x", "choices": "ab", "gold": 0}, "list of strings"),
    ({"context": "x", "gold": 0}, "no choices"),
    ({"context": "x", "choices": ["a", "b"], "gold": "Z"}, "not an index"),
    ([1, 2], "JSON object"),
])
def test_loader_errors_name_the_file_and_line(tmp_path, bad, match):
    good = {"context": "x", "choices": ["a", "b"], "gold": 0}
    p = write_jsonl(tmp_path / "t.jsonl", [good, good, bad])
    with pytest.raises(TaskError, match=match) as e:
        load_task_file(p)
    assert f"{p}:3:" in str(e.value) and "\n" not in str(e.value)


def test_loader_errors_for_a_missing_or_empty_file(tmp_path):
    with pytest.raises(TaskError, match="cannot read"):
        load_task_file(str(tmp_path / "missing.jsonl"))
    with pytest.raises(TaskError, match="no items"):
        load_task_file(write_jsonl(tmp_path / "empty.jsonl", []))


# -- scoring (workers.evals.scoring) ----------------------------------------------------------

def test_a_model_that_prefers_the_gold_scores_one():
    items = tuple(Item(f"item {i}: ", tuple(("x" * (i % 3 + 1), "y", "zz", "yy")[j] if j != g else "gold"
                                            for j in range(4)), g) for i, g in enumerate([0, 1, 2, 3, 1, 2]))
    enc = encode_task(Task("t", items), byte_encoder, 64)
    liked = set(b"gold")

    def logits_fn(x):
        out = torch.zeros(*x.shape, 256)
        out[..., list(liked)] = 10.0  # every byte of "gold" is likely, every other byte is not
        return out

    m = score(enc, logits_fn, batch_tokens=40)  # small batches: several padded groups
    assert m["acc"] == 1.0 and m["acc_norm"] == 1.0 and m["n_items"] == 6 and m["chance"] == 0.25
    expected = -math.log2(math.exp(10) / (4 * math.exp(10) + 252))  # bits per gold byte
    assert m["task_bpb"] == pytest.approx(expected)


def test_a_uniform_byte_model_has_eight_bits_per_byte_and_no_skill():
    items = (Item("abc", ("d", "e"), 0), Item("é ", ("ü!", "ab"), 0))
    m = score(encode_task(Task("t", items), byte_encoder, 16), lambda x: torch.zeros(*x.shape, 256))
    assert m["task_bpb"] == pytest.approx(8.0)
    assert m["acc"] == 0.0  # item 0 ties; in item 1 "ab" beats the gold, 3-byte "ü!", by being shorter
    assert m["acc_norm"] == 0.0  # per character "ü!" (2 chars, 3 bytes) is still less likely


def test_long_contexts_lose_tokens_from_the_left_never_from_the_choice():
    item = Item("z" * 100, ("abc", "de"), 0)
    enc = encode_task(Task("t", (item,)), byte_encoder, 32)
    assert all(len(s) <= 32 for s in enc.seqs)
    assert bytes(enc.seqs[0][-3:].tolist()) == b"abc"
    with pytest.raises(TaskError, match="choice 0 is 40 tokens"):
        encode_task(Task("t", (Item("c", ("q" * 40, "r"), 0),)), byte_encoder, 32)
