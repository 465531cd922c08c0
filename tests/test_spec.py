"""Spec validation at the edge: every malformed spec gets one line naming the field, exit 2,
and nothing is written."""

import os

import pytest
import yaml

from conftest import ROOT, tiny_spec_dict
from orchestrator.cli import main
from orchestrator.errors import UserError
from orchestrator.spec import load_spec, parse_spec


def test_shipped_specs_are_valid():
    for path in sorted((ROOT / "specs").glob("*.yaml")):
        spec = load_spec(path)
        assert spec.name and (spec.sweep or spec.adaptive)


def test_yaml_floats_like_2e11_are_numbers(tmp_path):
    spec = parse_spec(tiny_spec_dict(str(tmp_path), sweep={"kind": "isoflop", "budgets": ["2e11"], "model_sizes": ["1e4"]}))
    assert spec.sweep.budgets == [2e11]


def test_per_budget_sizes(tmp_path):
    spec = parse_spec(tiny_spec_dict(str(tmp_path), sweep={
        "kind": "isoflop", "budgets": [1e9, 2e9], "model_sizes": {"1e9": [1e3], "2e9": [2e3, 3e3]}}))
    assert spec.sweep.sizes_for(2e9) == [2e3, 3e3]


def _set(d: dict, dotted: str, value):
    keys = dotted.split(".")
    for k in keys[:-1]:
        d = d.setdefault(k, {})
    if value is _DELETE:
        d.pop(keys[-1], None)
    else:
        d[keys[-1]] = value


_DELETE = object()

# (dotted field, bad value, substring the one-line message must contain)
MALFORMED = [
    ("name", "../escape", "name"),
    ("name", "a/b", "name"),
    ("name", "", "name"),
    ("name", _DELETE, "name: required"),
    ("colour", "blue", "unknown key (valid keys:"),
    ("model.depth", 3, "model.depth: unknown key"),
    ("model.family", "lstm", "model.family"),
    ("model.seq_len", 0, "model.seq_len"),
    ("model.seq_len", "long", "model.seq_len"),
    ("model.head_dim", -8, "model.head_dim"),
    ("resources.gpus", float("inf"), "resources.gpus: Input should be a finite number"),
    ("resources.cpus", float("inf"), "resources.cpus: Input should be a finite number"),
    ("resources.cpus", "inf", "resources.cpus: Input should be a finite number"),
    ("train", 5, "train: expected a mapping of settings (got 5)"),
    ("world", [1, 2], "world: expected a mapping of settings"),
    ("data", {}, "exactly one of builtin, text, tokens"),
    ("data", {"builtin": "python-stdlib", "text": "x.txt"}, "exactly one of"),
    ("data.builtin", "wikipedia", "data.builtin"),
    ("data.eval_fraction", 0.9, "data.eval_fraction"),
    ("data.dtype", "float32", "data.dtype"),
    ("sweep.kind", "random", "sweep"),
    ("sweep.tokens", [1e6], "sweep.tokens: unknown key (valid keys: budgets, kind, model_sizes, seeds)"),
    ("sweep", _DELETE, "sweep: required"),
    ("sweep.budgets", [-1e12], "sweep.budgets[0]"),
    ("sweep.budgets", [], "sweep.budgets"),
    ("sweep.budgets", "lots", "sweep.budgets"),
    ("sweep.model_sizes", [0], "sweep.model_sizes"),
    ("sweep.model_sizes", {"5e8": [1e3]}, "no list for budget"),
    ("sweep.seeds", [-1], "sweep.seeds[0]"),
    ("train.lr", -0.1, "train.lr"),
    ("train.lr", "fast", "train.lr"),
    ("train.lr", ".nan", "train.lr"),
    ("train.optimizer", "sgd", "train.optimizer"),
    ("train.batch_tokens", 100, "not a multiple of model.seq_len"),
    ("train.betas", [0.9], "train.betas"),
    ("train.warmup_fraction", 1.5, "train.warmup_fraction"),
    ("train.min_lr_ratio", 2, "train.min_lr_ratio"),
    ("train.momentum", 0.9, "train.momentum: unknown key"),
    ("resources.gpus", 1.5, "resources.gpus"),
    ("resources.gpus", -1, "resources.gpus"),
    ("resources.cpus", 0, "resources.cpus"),
    ("resources.max_retries", -1, "resources.max_retries"),
    ("resources.max_hours", 0, "resources.max_hours"),
    ("resources.max_hours", "forever", "resources.max_hours"),
    ("resources.flops_per_s", -1e10, "resources.flops_per_s"),
    ("resources.memory_gb", ".inf", "resources.memory_gb"),
    ("sweep.model_sizes", [1e300], "sweep.model_sizes[0]: Input should be less than or equal to"),
    ("sweep.model_sizes", {"5e8": [1e19], "1.5e9": [1e3]}, "sweep.model_sizes.5e8[0]: Input should be less than"),
    ("fit.target_compute", 0, "fit.target_compute"),
]


@pytest.mark.parametrize("field,value,expected", MALFORMED, ids=[f"{m[0]}={m[1]!r}"[:40] for m in MALFORMED])
def test_malformed_spec_one_line_exit_2_nothing_written(tmp_path, capsys, field, value, expected):
    results = tmp_path / "results"
    spec = tiny_spec_dict(str(results))
    _set(spec, field, value)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith(f"scalesweep: error: {path}:")
    assert expected in err, err
    assert not results.exists()


@pytest.mark.parametrize("text,expected", [
    ("name: [unclosed", "line 1: invalid YAML"),
    ("- just\n- a list\n", "expected a YAML mapping"),
    ("", "expected a YAML mapping"),
    ("name: x\n  bad: indent\n", "invalid YAML"),
    ("!!python/object:os.system {}", "invalid YAML"),  # safe_load refuses object tags
])
def test_broken_yaml(tmp_path, capsys, text, expected):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and expected in err


def test_missing_spec_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "spec file not found" in capsys.readouterr().err


def test_budget_too_small_for_model(tmp_path, capsys):
    spec = tiny_spec_dict(str(tmp_path / "results"), sweep={"kind": "isoflop", "budgets": [1e6], "model_sizes": [8e3]})
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path), "--no-dashboard"]) == 2
    err = capsys.readouterr().err
    assert "sweep.budgets" in err and "min_steps" in err
    assert not (tmp_path / "results").exists()


def test_missing_data_path(tmp_path, capsys):
    spec = tiny_spec_dict(str(tmp_path / "results"), data={"builtin": None, "text": str(tmp_path / "none.txt")})
    spec["data"].pop("builtin")
    path = tmp_path / "nodata.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path)]) == 2
    assert "data.text" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere; permission check not testable as root")
def test_unwritable_results(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    spec = tiny_spec_dict(str(ro / "results"))
    path = tmp_path / "ro.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path)]) == 2
    assert "results" in capsys.readouterr().err


def test_results_path_under_a_file(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    spec = tiny_spec_dict(str(blocker / "results"))
    path = tmp_path / "f.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err
    assert "results: cannot create" in err and blocker.read_text() == "not a directory"


def test_parse_spec_raises_user_error():
    with pytest.raises(UserError):
        parse_spec({"name": "x"})


def test_the_readme_spec_reference_is_a_valid_spec():
    """The annotated spec of docs/specs.md must load: a reference that drifts from the schema misleads."""
    from conftest import ROOT

    text = (ROOT / "docs" / "specs.md").read_text()
    block = text[text.index("# Sweep spec reference"):].split("```yaml", 1)[1].split("```", 1)[0]
    spec = parse_spec(yaml.safe_load(block))
    assert spec.train.checkpoint_every_s == 600 and spec.train.compile is False
