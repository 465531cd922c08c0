"""Built-in multiple-choice tasks, generated from the held-out text of the sweep's own corpus.

A byte-level sweep on arbitrary text has no benchmark of its own, so these tasks are cut from
the corpus's held-out blocks (workers.gpt.data: every ``eval_every``-th block, never trained
on), deterministically: the items depend only on (blocks, n_items, seed), through numpy's
``default_rng`` seeded with the seed and a SHA-256 of the task's name. Each is scored like an
lm-evaluation-harness multiple-choice task (workers.evals.scoring); each choice ends where the
gold's line or word ends, so that no choice is a prefix of another and summed log-probabilities
compare complete continuations. Four tasks of graded difficulty:

- ``brackets`` (easiest): the context is a line up to its closing run of brackets, the choices
  that run (with what follows it on the line, e.g. ``):``) against runs of other lengths (a
  window of four consecutive counts around the right one, 0 included: an open bracket at the
  end of a line is common in code) or in another order or type. Needs counting the brackets
  still open, and which kinds.
- ``indent`` (easy to middle): the context ends at a line break, the choices are the next
  line's indentation at four depths 4 spaces apart, each followed by the line's first character
  (the same in all). A third of the items follow a line ending in ':' (one step deeper), a third
  a return/pass/raise/continue/break (one or two steps shallower), a third a plain statement
  (as deep); the window of depths always holds the line before's depth and the gold, and within
  each kind the gold is equally often at each place it can be. Needs the line before's depth (so
  counting spaces) and what kind of line it is. Tab-indented lines make no items.
- ``identifier`` (middle): the context ends where a word that occurs earlier in the context
  occurs again; the choices are that word and other repeated words (a file's identifiers, not
  comment prose) of exactly its length that do not occur in the context, from the same block
  where it has enough, each followed by the character that follows the gold. Needs copying
  from the context (an induction head, Olsson et al. 2022), which one-layer models do poorly.
- ``next_line`` (hardest): the context ends at a line break, the next line (at most 31
  characters) shares a word with it; the choices are that line and lines from other blocks with
  exactly its indentation and length, sharing no word with the context, whose likelihood under
  a byte bigram model of the text is near the gold's. Needs the context's content: syntax and
  how likely a line is on its own cannot tell them apart.

Words are ``\\w`` runs starting with a letter (any script, so prose in any language yields
items); the most frequent word types of the text (its keywords and function words) are never
the gold. Items containing U+FFFD (bytes that did not decode) are skipped. Each generator finds
as many items as the text allows, up to ``n_items``; fewer than ``min(n_items, MIN_ITEMS)``
is a :class:`TaskError` naming the task and what it needs.

Artifacts are controlled: choices never differ in trailing whitespace, indentation or
terminator in a way the gold does not; next_line and identifier choices all have the gold's
length; indent's choices differ only in their indentation; brackets' count window puts the gold at a random position in it, and items are
stratified by the run's length (in code most lines close one bracket: a model that always
closes one would otherwise score about 0.6).
bench/bench_builtin_tasks.py checks that always picking the shortest or the longest choice (and
for indent, the previous line's depth) is near chance, and measures accuracy against compute (docs/benchmarks.md, "Built-in tasks").
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections import Counter, defaultdict
from typing import Callable, Sequence

import numpy as np

from workers.evals.tasks import Item, Task, TaskError

__all__ = ["BUILTIN_TASKS", "MIN_ITEMS", "builtin_task"]

BUILTIN_TASKS = ("brackets", "indent", "identifier", "next_line")
MIN_ITEMS = 50  # fewer items than this cannot tell models apart (the standard error of acc ~ 0.07)
N_CHOICES = 4
CONTEXT_CHARS = 80  # at most; the quickstart's models see 128 bytes
MIN_CONTEXT = 24
MIN_MAX_CHARS = 48
BAD = "\ufffd\r\x00"  # undecodable bytes, carriage returns and NULs make no items

OPEN, CLOSE = "([{", ")]}"
MATCH = dict(zip(OPEN, CLOSE))
# Shares of items by the length of the closing run (1, 2, 3 or more) while the text has them:
# in code most lines close one bracket, and a model that always closes one would score high.
BRACKET_SHARES = {1: (1, 0.4), 2: (2, 0.35), 3: (3, 0.25)}
BRACKET_TAIL = re.compile(r"[)\]}]+[:;,]?$")
WORD = re.compile(r"(?<!\w)[^\W\d_]\w{2,}(?!\w)")
# The commonest word types (keywords, "self", "the") are guessable without the context: the 60
# commonest, or the top 5 % of a small vocabulary.
STOP_WORDS = 60
MAX_WORD = 24
# next_line: choices of at most this many characters (newline included), at least MIN_LINE.
MAX_LINE, MIN_LINE = 32, 8
NEAR = 8  # next_line's distractors: 3 of the 8 lines most like the gold to a bigram model
# indent: choices a step of 4 spaces apart, each followed by the line's first character; the
# statements after which the next line dedents (by one or two steps).
INDENT_STEP, INDENT_HEAD = 4, 1
DEDENT_AFTER = re.compile(r"(return|pass|raise|continue|break)\b")


def _rng(name: str, seed: int) -> np.random.Generator:
    digest = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return np.random.default_rng([int(seed), digest])


def _context(text: str, pos: int, longest: int, max_chars: int) -> str | None:
    """Up to CONTEXT_CHARS characters before ``pos`` that leave room for the longest choice."""
    n = min(CONTEXT_CHARS, max_chars - longest)
    ctx = text[max(0, pos - n):pos]
    return ctx if len(ctx) >= MIN_CONTEXT and not any(b in ctx for b in BAD) else None


def _lines(text: str) -> list[tuple[int, str]]:
    """(offset, line without its newline) of every complete line (the last, unterminated, is not)."""
    out, start = [], 0
    while (end := text.find("\n", start)) >= 0:
        out.append((start, text[start:end]))
        start = end + 1
    return out


# -- brackets ---------------------------------------------------------------------------------

def _open_stack(ctx: str) -> list[str] | None:
    """The brackets still open at the end of ``ctx`` (innermost last); None if they mismatch.
    Closers whose opener lies before the context are ignored."""
    stack: list[str] = []
    for ch in ctx:
        if ch in OPEN:
            stack.append(ch)
        elif ch in CLOSE and stack:
            if MATCH[stack.pop()] != ch:
                return None
    return stack


def _bracket_candidates(blocks: Sequence[str]) -> list[tuple[int, int, str, str]]:
    """(block, position, closing run, what follows it) of every line ending in closing brackets."""
    out = []
    for b, text in enumerate(blocks):
        for start, line in _lines(text):
            m = BRACKET_TAIL.search(line)
            if m and m.start() > 0 and not line[m.start() - 1].isspace():
                run = m.group().rstrip(":;,")
                out.append((b, start + m.start(), run, m.group()[len(run):]))
    return out


def _bracket_item(blocks, cand, rng, max_chars) -> Item | None:
    b, pos, run, after = cand
    longest = len(run) + 3 + len(after) + 1
    ctx = _context(blocks[b], pos, longest, max_chars)
    if ctx is None:
        return None
    stack = _open_stack(ctx)
    k = len(run)
    # The run closes exactly the brackets open in the context: unambiguous items (a line that
    # leaves some open continues on the next, and a shorter run would be right as well).
    if stack is None or "".join(MATCH[o] for o in reversed(stack)) != run:
        return None
    full = list(run) + [run[-1]] * N_CHOICES  # past the open ones: more of the outermost kind
    lo = int(rng.integers(max(0, k - N_CHOICES + 1), k + 1))
    runs = ["".join(full[:j]) for j in range(lo, lo + N_CHOICES) if j != k]
    kinds = sorted({MATCH[o] for o in ctx if o in OPEN})
    swaps = {run[:i] + c + run[i + 1:] for i in range(k) for c in kinds if c != run[i]}
    swaps |= {run[::-1]} - {run}
    if swaps:  # one distractor of the right length, wrong kind or order
        runs[int(rng.integers(len(runs)))] = sorted(swaps)[int(rng.integers(len(swaps)))]
    if len(set(runs) | {run}) < N_CHOICES:
        return None
    choices = [r + after + "\n" for r in runs]
    gold = int(rng.integers(N_CHOICES))
    choices.insert(gold, run + after + "\n")
    return Item(ctx, tuple(choices), gold)


# -- identifier -------------------------------------------------------------------------------

class _Words:
    """Word occurrences per block, their counts, and the commonest types (never the gold)."""

    def __init__(self, blocks: Sequence[str]):
        self.occ = [[(m.start(), m.group()) for m in WORD.finditer(t)] for t in blocks]
        count = Counter(w for occ in self.occ for _, w in occ)
        self.stop = {w for w, _ in count.most_common(min(STOP_WORDS, len(count) // 20))}


def _identifier_candidates(blocks: Sequence[str], words: _Words) -> list[tuple[int, int, str]]:
    """(block, position, word) of every word that occurs within CONTEXT_CHARS before itself."""
    out = []
    for b, occ in enumerate(words.occ):
        last: dict[str, int] = {}
        for pos, w in occ:
            prev = last.get(w)
            if prev is not None and pos - prev <= CONTEXT_CHARS - len(w) and w not in words.stop \
                    and len(w) <= MAX_WORD:
                out.append((b, pos, w))
            last[w] = pos
    return out


def _repeated_by_length(cands) -> tuple[dict, dict]:
    """The candidates' words (repeated words: mostly a file's own identifiers, not comment prose)
    by (block, length) and by length, sorted: the distractor pools."""
    local, anywhere = defaultdict(set), defaultdict(set)
    for b, _, w in cands:
        local[(b, len(w))].add(w)
        anywhere[len(w)].add(w)
    return {k: sorted(v) for k, v in local.items()}, {k: sorted(v) for k, v in anywhere.items()}


def _identifier_item(blocks, pools, cand, rng, max_chars) -> Item | None:
    b, pos, w = cand
    text = blocks[b]
    end = pos + len(w)
    if end >= len(text) or text[end] in BAD:
        return None
    term = text[end]  # every choice ends with the character after the gold: a complete word
    ctx = _context(text, pos, len(w) + 1, max_chars)
    if ctx is None or not re.search(rf"(?<!\w){re.escape(w)}(?!\w)", ctx[1:]):
        return None
    # Distractors: repeated words of exactly the gold's length (neither length nor the kind of
    # word tells: an English word of a comment against a file's identifier would), absent from
    # the context; from the same block where it has enough, else from anywhere in the text.
    choices = []
    for pool in (pools[0].get((b, len(w)), ()), pools[1].get(len(w), ())):
        options = [d for d in pool if d != w and d not in ctx and d + term not in choices]
        take = min(N_CHOICES - 1 - len(choices), len(options))
        choices += [options[i] + term for i in sorted(rng.choice(len(options), take, replace=False))]
        if len(choices) == N_CHOICES - 1:
            break
    else:
        return None
    gold = int(rng.integers(N_CHOICES))
    choices.insert(gold, w + term)
    return Item(ctx, tuple(choices), gold)


# -- next_line --------------------------------------------------------------------------------

def _indent(line: str) -> str:
    return line[: len(line) - len(line.lstrip(" \t"))]


def _line_pool(blocks: Sequence[str], max_line: int) -> dict:
    """(indentation, length) -> sorted distinct (block, line) of the lines fit to be choices."""
    pool: dict[tuple[str, int], set] = defaultdict(set)
    for b, text in enumerate(blocks):
        for _, line in _lines(text):
            if _line_ok(line, max_line):
                pool[(_indent(line), len(line))].add((b, line))
    return {k: sorted(v) for k, v in pool.items()}


def _line_ok(line: str, max_line: int) -> bool:
    body = line.strip()
    return (MIN_LINE <= len(line) + 1 <= max_line and len(body) >= 4 and line == line.rstrip()
            and not any(c in line for c in BAD))


def _next_line_candidates(blocks: Sequence[str], max_line: int) -> list[tuple[int, int, str]]:
    return [(b, start, line) for b, text in enumerate(blocks) for start, line in _lines(text)
            if start > 0 and _line_ok(line, max_line)]


class _Bigram:
    """An add-one byte bigram model of the text: how likely a line is without its context."""

    def __init__(self, blocks: Sequence[str]):
        counts = np.ones((256, 256))
        for text in blocks:
            b = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
            np.add.at(counts, (b[:-1], b[1:]), 1)
        self.logp = np.log(counts / counts.sum(1, keepdims=True))

    def loglik(self, line: str) -> float:
        b = np.frombuffer(("\n" + line + "\n").encode("utf-8"), dtype=np.uint8)
        return float(self.logp[b[:-1], b[1:]].sum())


def _next_line_item(blocks, pool, stop, bigram, cand, rng, max_chars, max_line) -> Item | None:
    b, start, line = cand
    ind = _indent(line)
    ctx = _context(blocks[b], start, max_line, max_chars)
    if ctx is None:
        return None
    ctx_words = {w for w in WORD.findall(ctx) if w not in stop}
    if not ctx_words & set(WORD.findall(line)):
        return None  # a line that shares no word with its context: a guess for any model
    # Distractors: lines of other blocks with the same indentation and length that share no
    # word with the context, and of those the NEAR whose bigram likelihood is nearest the gold's
    # (half above, half below): how likely a line is on its own would otherwise decide most
    # items, whatever the context.
    options = sorted({d for _, d in pool.get((ind, len(line)), ())
                      if d != line and not ctx_words & set(WORD.findall(d))})
    if len(options) < N_CHOICES - 1:
        return None
    ranked = sorted(options, key=lambda d: (bigram.loglik(d), d))
    at = bisect.bisect_left([bigram.loglik(d) for d in ranked], bigram.loglik(line))
    lo = min(max(0, at - NEAR // 2), max(0, len(ranked) - NEAR))
    near = ranked[lo:lo + NEAR]  # as many as can be below the gold's likelihood as above it
    choices = [near[i] + "\n" for i in sorted(rng.choice(len(near), N_CHOICES - 1, replace=False))]
    gold = int(rng.integers(N_CHOICES))
    choices.insert(gold, line + "\n")
    return Item(ctx, tuple(choices), gold)


# -- indent -----------------------------------------------------------------------------------

def _depth(line: str) -> int | None:
    """The line's indentation in spaces; None for a blank line or one indented with a tab."""
    ind = _indent(line)
    return None if not line.strip() or "\t" in ind else len(ind)


def _indent_kind(prev: str, depth: int, prev_depth: int) -> str | None:
    """Which of indent's three kinds a line after ``prev`` is, or None: ``indent`` after a line
    ending in ':', ``dedent`` after a return/pass/raise/continue/break, ``same`` after a plain
    statement (its brackets balanced) at the same depth, not 0."""
    body = prev.strip()
    if body.endswith(":"):
        return "indent" if depth == prev_depth + INDENT_STEP else None
    if DEDENT_AFTER.match(body):
        drop = prev_depth - depth
        return "dedent" if drop in (INDENT_STEP, 2 * INDENT_STEP) else None
    balanced = sum(body.count(o) for o in OPEN) == sum(body.count(c) for c in CLOSE)
    # indented: a text without indentation (prose) has no items, rather than all of this kind
    return "same" if depth == prev_depth > 0 and balanced and not body.endswith(("\\", ",")) else None


def _indent_candidates(blocks: Sequence[str]) -> list[tuple[int, int, int, int, int, str, int]]:
    """(block, start of the line, start of the last non-blank line before it, their depths, the
    kind, the first choice's depth) of every line of one of indent's kinds (at most one blank line
    between the two), once for each place of the choices' window that holds both depths."""
    out = []
    span = (N_CHOICES - 1) * INDENT_STEP
    for b, text in enumerate(blocks):
        prev = None  # (start, line, depth) of the last non-blank line, while within one blank line
        blank = 0
        for start, line in _lines(text):
            depth = _depth(line)
            if not line.strip():
                blank += 1
                continue
            if prev is not None and blank <= 1 and depth is not None and prev[2] is not None:
                kind = _indent_kind(prev[1], depth, prev[2])
                if kind is not None:
                    lo, hi = max(depth, prev[2]) - span, min(depth, prev[2])
                    out += [(b, start, prev[0], depth, prev[2], kind, first)
                            for first in range(depth % INDENT_STEP, hi + 1, INDENT_STEP) if first >= lo]
            prev, blank = (start, line, depth), 0
    return out


def _indent_stratum(cand) -> tuple[tuple[str, int], float]:
    """A third of the items of each kind, and within a kind the gold equally often at each place
    it can be (after a ':' never the shallowest choice, after a return never the deepest): so
    neither "as deep as the line before" nor the shallowest or the deepest choice is a rule that
    solves the task (about 1/3, 1/5 and 1/5)."""
    _, _, _, depth, _, kind, first = cand
    return (kind, (depth - first) // INDENT_STEP), 1 / (3 * (N_CHOICES - (kind != "same")))


def _indent_item(blocks, cand, rng, max_chars) -> Item | None:
    b, start, prev_start, depth, prev_depth, _, first = cand
    text = blocks[b]
    head = text[start + depth:start + depth + INDENT_HEAD]  # the same in every choice
    if any(c in head for c in BAD):
        return None
    # The context does not depend on the window (a line is one item however its window falls).
    widest = min(depth, prev_depth) + (N_CHOICES - 1) * INDENT_STEP + len(head)
    ctx = _context(text, start, widest, max_chars)
    if ctx is None or len(ctx) < start - prev_start:
        return None  # the context shows the line before from its start, and so its depth
    cut = ctx.find("\n")  # start at a line start where that leaves enough context
    if len(ctx) - cut - 1 >= max(MIN_CONTEXT, start - prev_start):
        ctx = ctx[cut + 1:]
    depths = [first + j * INDENT_STEP for j in range(N_CHOICES)]
    return Item(ctx, tuple(" " * d + head for d in depths), depths.index(depth))


# -- the tasks --------------------------------------------------------------------------------

def _sample(name: str, cands: list, make: Callable, n_items: int, seed: int,
            strata: Callable | None = None) -> list[Item]:
    """Items from candidates in a seeded random order until ``n_items`` (each made once).

    ``strata`` (candidate -> (stratum, share)): candidates are taken round-robin by share, so
    that e.g. brackets' short runs, most of the text's, do not make nearly all of the items."""
    rng = _rng(name, seed)
    items, seen = [], set()
    order = rng.permutation(len(cands))
    if strata is not None:
        groups: dict = defaultdict(list)
        shares = {}
        for i in order:
            g, shares[g] = strata(cands[i])
            groups[g].append(i)
        # Candidate j of stratum g comes at "time" j / share: each stratum at its rate until spent.
        keyed = [(j / shares[g], g, i) for g, idx in groups.items() for j, i in enumerate(idx)]
        order = [i for _, _, i in sorted(keyed)]
    for i in order:
        item = make(cands[i], rng)
        if item is not None and (item.context, item.choices[item.gold]) not in seen:
            seen.add((item.context, item.choices[item.gold]))
            items.append(item)
            if len(items) == n_items:
                break
    return items


def builtin_task(name: str, blocks: Sequence[str], n_items: int = 500, seed: int = 0,
                 max_chars: int = 100) -> Task:
    """The built-in task ``name`` (one of BUILTIN_TASKS) cut from ``blocks``, held-out text.

    Up to ``n_items`` items, fixed by (blocks, n_items, seed); each item's context plus its
    longest choice is at most ``max_chars`` characters. Raises TaskError for an unknown name,
    bad settings, or text that yields fewer than min(n_items, MIN_ITEMS) items.
    """
    if name not in BUILTIN_TASKS:
        raise TaskError(f"builtin task {name!r}: unknown (expected one of {', '.join(BUILTIN_TASKS)})")
    if n_items < 1:
        raise TaskError(f"builtin task {name}: n_items={n_items} (expected at least 1)")
    if max_chars < MIN_MAX_CHARS:
        raise TaskError(f"builtin task {name}: max_chars={max_chars} (expected at least {MIN_MAX_CHARS})")
    blocks = [str(t) for t in blocks]
    if name == "brackets":
        cands = _bracket_candidates(blocks)
        items = _sample(name, cands, lambda c, r: _bracket_item(blocks, c, r, max_chars), n_items, seed,
                        strata=lambda c: BRACKET_SHARES[min(len(c[2]), 3)])
        needs = "lines ending in closing brackets whose openers are in the 80 characters before"
    elif name == "identifier":
        cands = _identifier_candidates(blocks, _Words(blocks))
        pools = _repeated_by_length(cands)
        items = _sample(name, cands, lambda c, r: _identifier_item(blocks, pools, c, r, max_chars),
                        n_items, seed)
        needs = "words repeated within 80 characters, and other words of similar length in the same block"
    elif name == "indent":
        items = _sample(name, _indent_candidates(blocks), lambda c, r: _indent_item(blocks, c, r, max_chars),
                        n_items, seed, strata=_indent_stratum)
        needs = "space-indented lines after lines ending in ':', after return/pass/raise/continue/break, " \
                "and after plain statements at the same depth"
    else:
        max_line = min(MAX_LINE, max_chars - MIN_CONTEXT)
        pool = _line_pool(blocks, max_line)
        cands = _next_line_candidates(blocks, max_line)
        stop, bigram = _Words(blocks).stop, _Bigram(blocks)
        items = _sample(name, cands,
                        lambda c, r: _next_line_item(blocks, pool, stop, bigram, c, r, max_chars, max_line),
                        n_items, seed)
        needs = "short lines, and lines of the same indentation and length in other blocks"
    minimum = min(n_items, MIN_ITEMS)
    if len(items) < minimum:
        raise TaskError(f"builtin task {name}: the text yields {len(items)} items, fewer than {minimum} "
                        f"(it needs {needs}); give more held-out text or leave the task out")
    return Task(name, tuple(items))
