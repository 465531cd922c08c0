"""The specs' JSON Schema, generated from the pydantic models: ``scalesweep schema``.

Editors validate and complete specs from it: every example spec begins with the
yaml-language-server comment that names ``specs/scalesweep.schema.json`` (the committed copy,
which tests/test_schema.py keeps equal to this output). Generated, it cannot drift from what
:func:`orchestrator.spec.parse_spec` accepts, with one widening: a number may also be written as a
numeric string, because YAML 1.1 (PyYAML, and so ``load_spec``) reads ``2e11`` as the string
"2e11", which the loader coerces to a float; a schema that refused it would flag the project's own
specs. Unknown keys are refused (``additionalProperties: false``), as the loader refuses them.
"""

from __future__ import annotations

import json

__all__ = ["SCHEMA_FILE", "add_parser", "spec_schema"]

SCHEMA_FILE = "specs/scalesweep.schema.json"  # relative to the project root
# A number as a string: what pydantic's float coercion accepts from YAML 1.1 ("2e11", "1.5e-3"),
# and a whole number as one (pydantic refuses "1e5" and "1024.5" for an integer, takes "1024.0").
NUMERIC_STRING = r"^\s*[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]{1,2})?\s*$"  # exponents to 99: finite
INTEGER_STRING = r"^\s*[+-]?[0-9]+(\.0*)?\s*$"


# Models whose validators also take a bare string: an eval task's name or file
# (workers.evals.config.EvalTask), and the word ``tune`` for a searched setting (workers.config.Tune).
STRING_FORMS = {"EvalTask": {"type": "string", "description": "a built-in task's name, or the path of a .jsonl task file"},
                "Tune": {"const": "tune", "description": "search it around its default (tune's defaults)"}}


def _widen(node):
    """Every {"type": "number"} also accepts a numeric string, and every integer a whole number
    written as a float (1.2e7) or a string; recursively."""
    if isinstance(node, dict):
        out = {k: _widen(v) for k, v in node.items()}
        if out.get("type") in ("number", "integer"):
            kind = out.pop("type")
            limits = {k: out.pop(k) for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")
                      if k in out}
            number = {"type": "number", **limits} | ({"multipleOf": 1} if kind == "integer" else {})
            out["anyOf"] = [number, {"type": "string", "pattern": INTEGER_STRING if kind == "integer" else NUMERIC_STRING}]
        return out
    if isinstance(node, list):
        return [_widen(v) for v in node]
    return node


def spec_schema() -> dict:
    """The JSON Schema (draft 2020-12) of a sweep spec."""
    from orchestrator.spec import SweepSpec

    schema = _widen(SweepSpec.model_json_schema())
    for name, form in STRING_FORMS.items():
        if name in schema.get("$defs", {}):
            schema["$defs"][name] = {"anyOf": [form, schema["$defs"][name]]}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://scalesweep.dev/schema/spec.json",
            "title": "scalesweep sweep spec",
            "description": "A sweep spec (YAML) for `scalesweep run`; see docs/specs.md and docs/reference/spec.md.",
            **{k: v for k, v in schema.items() if k != "title"}}


def add_parser(sub) -> None:
    p = sub.add_parser("schema", help="print the JSON Schema of sweep specs (for editors and validators)",
                       description="Print the JSON Schema of sweep specs, generated from the spec's models. "
                                   "Editors use it through the comment at the top of every example spec: "
                                   "# yaml-language-server: $schema=scalesweep.schema.json")
    p.add_argument("--out", metavar="FILE", help="write it to FILE instead of standard output")
    p.set_defaults(fn=cmd_schema)


def cmd_schema(args) -> int:
    from orchestrator.errors import UserError

    text = json.dumps(spec_schema(), indent=1, sort_keys=True) + "\n"
    if not args.out:
        print(text, end="")
        return 0
    try:
        with open(args.out, "w") as f:
            f.write(text)
    except OSError as e:
        raise UserError(f"--out {args.out}: cannot write ({e.strerror})") from None
    return 0
