"""The specs' JSON Schema (orchestrator.spec.schema, `scalesweep schema`): the committed copy is
the generated one, every example spec validates against it and names it for editors, and it
refuses what the loader refuses (a misspelled key, a value outside an enum)."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import ROOT
from orchestrator.cli import main
from orchestrator.spec import load_spec
from orchestrator.spec.schema import SCHEMA_FILE, spec_schema

EXAMPLES = sorted(ROOT.glob("specs/*.yaml")) + sorted(ROOT.glob("examples/*/*.yaml"))


@pytest.fixture(scope="module")
def validator():
    return jsonschema.Draft202012Validator(json.loads((ROOT / SCHEMA_FILE).read_text()))


def test_the_committed_schema_is_the_generated_one(capsys):
    committed = json.loads((ROOT / SCHEMA_FILE).read_text())
    assert committed == json.loads(json.dumps(spec_schema())), \
        f"{SCHEMA_FILE} is stale: regenerate it with `scalesweep schema --out {SCHEMA_FILE}`"
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == committed and printed["$schema"].endswith("2020-12/schema")
    jsonschema.Draft202012Validator.check_schema(printed)


@pytest.mark.parametrize("path", EXAMPLES, ids=[str(p.relative_to(ROOT)) for p in EXAMPLES])
def test_every_example_spec_validates_and_names_the_schema(path: Path, validator):
    first = path.read_text().splitlines()[0]
    assert first.startswith("# yaml-language-server: $schema=")
    assert (path.parent / first.split("$schema=", 1)[1]).resolve() == (ROOT / SCHEMA_FILE).resolve()
    errors = [e.message for e in validator.iter_errors(yaml.safe_load(path.read_text()))]
    assert not errors
    load_spec(str(path))  # and the loader takes it: schema and models agree on the examples


@pytest.mark.parametrize("change, message", [
    (lambda d: d.__setitem__("trian", d.pop("train")), "'trian' was unexpected"),
    (lambda d: d["train"].__setitem__("lr_peak", 1e-3), "'lr_peak' was unexpected"),
    (lambda d: d.__setitem__("planner", "dynamic"), "'dynamic' is not one of"),
    (lambda d: d["resources"].__setitem__("strategy", "zero3"), "'zero3' is not one of"),
    (lambda d: d["sweep"].__setitem__("budgets", "many"), "'many' is not of type 'array'"),
    (lambda d: d["data"].__setitem__("eval_tokens", "1e5"), "'1e5' does not match"),  # an integer field
])
def test_the_schema_refuses_what_the_loader_refuses(validator, change, message):
    d = yaml.safe_load((ROOT / "specs" / "quickstart.yaml").read_text())
    change(d)
    errors = list(_messages(validator.iter_errors(d)))
    assert any(message in m for m in errors), errors


def _messages(errors):
    """Every message, those inside anyOf/oneOf alternatives (a discriminated union) included."""
    for e in errors:
        yield e.message
        yield from _messages(e.context or [])


def test_numbers_as_yaml_1_1_writes_them_validate(validator):
    d = yaml.safe_load((ROOT / "specs" / "quickstart.yaml").read_text())
    d["sweep"]["budgets"] = ["2e11", 6e11, "1.5e12"]  # PyYAML reads 2e11 as a string; the loader takes it
    d["evals"] = {"tasks": ["brackets", {"file": "t.jsonl", "n_items": 100}]}
    d["train"]["lr"] = "tune"  # a search around the default: the loader takes the bare word
    d["data"]["eval_tokens"] = "65536"
    assert not list(validator.iter_errors(d))
