"""Generate the reference pages from the code, so they cannot drift from it.

- ``docs/reference/spec.md``: every section and field of a sweep spec, from the pydantic models
  (orchestrator.spec.SweepSpec and the models it nests): type, default, and the comments the
  source gives each field (the line above it and the one after it), in the order the models
  declare them.
- ``docs/reference/cli.md``: every command and option, from the argument parser (orchestrator.cli).

    python docs/gen_reference.py          # write both pages
    python docs/gen_reference.py --check  # exit 1 if a committed page differs (tests/test_docs.py)
"""

from __future__ import annotations

import argparse
import inspect
import io
import os
import sys
import tokenize
import typing
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["COLUMNS"] = "100"  # argparse wraps help to the terminal: the page must not depend on it
PAGES = {"spec": ROOT / "docs" / "reference" / "spec.md", "cli": ROOT / "docs" / "reference" / "cli.md"}


def _type(ann) -> str:
    """A readable type: Annotated metadata dropped, unions with |, models by name."""
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return " | ".join(_type(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type(a) for a in args if a is not Ellipsis)}]"
    if ann is type(None):
        return "null"
    return getattr(ann, "__name__", str(ann).replace("typing.", ""))


def _comments(cls) -> dict[str, str]:
    """field name -> the comments around its declaration in ``cls``'s source."""
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out, above = {}, []
    lines = src.splitlines()
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("#"):
            above.append(stripped.lstrip("#").strip())
            continue
        head = stripped.split(":", 1)[0].strip()
        if ":" in stripped and head.isidentifier() and not stripped.startswith(("def ", "class ", "@", "return")):
            trailing = ""
            try:
                toks = list(tokenize.generate_tokens(io.StringIO(line + "\n").readline))
                trailing = " ".join(t.string.lstrip("#").strip() for t in toks if t.type == tokenize.COMMENT)
            except (tokenize.TokenError, IndentationError):
                pass
            out[head] = " ".join(x for x in above + [trailing] if x)
        if stripped and not stripped.startswith("#"):
            above = []
    return out


def _models(root) -> list:
    """``root`` and every pydantic model its fields name, in first-seen order."""
    from pydantic import BaseModel

    seen, order = set(), []

    def visit(ann):
        for a in (typing.get_args(ann) or ()):
            visit(a)
        if isinstance(ann, type) and issubclass(ann, BaseModel) and ann not in seen:
            seen.add(ann)
            order.append(ann)
            for f in ann.model_fields.values():
                visit(f.annotation)

    visit(root)
    return order


def _default(field) -> str:
    from pydantic_core import PydanticUndefined

    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if hasattr(value, "model_dump"):
        return "(its defaults)"
    return f"`{value!r}`"


def spec_page() -> str:
    from orchestrator.spec import SweepSpec

    out = ["# Spec reference", "",
           "Generated from the spec's models by `python docs/gen_reference.py` (do not edit by hand). Every mapping",
           "refuses keys it does not list. Numbers may be written as YAML 1.1 writes them (`2e11`). The annotated",
           "example is in [Writing specs](../specs.md); editors validate specs with `scalesweep schema`.", ""]
    for cls in _models(SweepSpec):
        notes = _comments(cls)
        name = "SweepSpec (the top level)" if cls is SweepSpec else cls.__name__
        out += [f"## {name}", ""]
        doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")  # its own, not BaseModel's
        if doc:
            out += [doc.split("\n\n")[0].replace("\n", " "), ""]
        out += ["| field | type | default | notes |", "|---|---|---|---|"]
        for fname, field in cls.model_fields.items():
            text = (field.description or notes.get(fname, "")).replace("|", "\\|")
            typ = _type(field.annotation).replace("|", "\\|")
            out.append(f"| `{fname}` | {typ} | {_default(field).replace('|', chr(92) + '|')} | {text} |")
        out.append("")
    return "\n".join(out)


def _usage(name: str, p: argparse.ArgumentParser) -> str:
    """One usage line written here, not argparse's (whose wrapping and colour vary by Python and terminal)."""
    parts = [f"scalesweep {name}"]
    for a in p._actions:
        if isinstance(a, argparse._HelpAction):
            continue
        if not a.option_strings:
            parts.append(a.metavar or a.dest)
            continue
        flag = a.option_strings[-1] if a.option_strings[-1].startswith("--") else a.option_strings[0]
        takes = a.nargs != 0 and not isinstance(a, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        parts.append(f"[{flag} {a.metavar or a.dest.upper()}]" if takes else f"[{flag}]")
    return " ".join(parts)


def cli_page() -> str:
    from orchestrator.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = ["# Command-line reference", "",
           "Generated from the argument parser by `python docs/gen_reference.py` (do not edit by hand).", "",
           "```", f"scalesweep [-v] {{{','.join(sub.choices)}}} ...", "```", ""]
    helps = {c.dest: c.help for c in sub._choices_actions}
    for name, p in sub.choices.items():
        out += [f"## scalesweep {name}", "", helps.get(name) or "", ""]
        if p.description:
            out += [p.description, ""]
        out += ["```", _usage(name, p), "```", "", "| argument | meaning |", "|---|---|"]
        for a in p._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            flag = ", ".join(a.option_strings) or a.dest
            meaning = (a.help or "").replace("%%", "%").replace("|", "\\|")
            out.append(f"| `{flag}` | {meaning} |")
        out.append("")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if a committed page is not the generated one")
    args = ap.parse_args()
    stale = []
    for key, make in (("spec", spec_page), ("cli", cli_page)):
        text = make() + "\n"
        path = PAGES[key]
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    if stale:
        print(f"stale: {', '.join(stale)} (regenerate with python docs/gen_reference.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
