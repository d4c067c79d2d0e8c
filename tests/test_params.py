"""The one typed config: every section typed, every wrong type or unknown key refused with its
key path, relative paths resolved against params.yaml's folder, defaults without a file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from schemas.params import (
    SECTIONS,
    Params,
    ParamsError,
    find_params,
    load_label_set,
    load_params,
    params_from_dict,
)
from tests.conftest import ROOT

BAD = [
    ([1, 2], "expected a mapping of sections"),
    ("just text", "expected a mapping of sections"),
    ({"dedupe": {"threshold": 0.8}}, "unknown section(s) ['dedupe'] (did you mean 'dedup'?)"),
    ({"noise": {"enabled": "false"}}, "noise.enabled: expected true/false, got str 'false'"),
    ({"noise": {"enabled": "no"}}, "noise.enabled: expected true/false"),
    ({"noise": {"features": "tfidf_word"}}, "noise.features: expected a list of strings, got str"),
    ({"noise": {"max_iter": 1.5}}, "noise.max_iter: expected an integer, got float 1.5"),
    ({"noise": {"n_jobs": "all"}}, "noise.n_jobs: expected an integer or null, got str 'all'"),
    ({"dedup": {"seed": "abc"}}, "dedup.seed: expected an integer, got str 'abc'"),
    ({"dedup": {"threshold": True}}, "dedup.threshold: expected a finite number, got bool"),
    ({"data": {"labels": {"a": 1}}}, "data.labels: expected a list of"),
    ({"data": {"labels": []}}, "empty label set"),
    ({"data": {"labels": ["a", 1.5]}}, "data.labels: expected a list of"),
    ({"gate": {"max_imbalance_ratio": float("inf")}}, "expected a finite number, got float inf"),
    ({"gate": {"max_dupes": 0.1}}, "gate: unknown key(s) ['max_dupes']"),
    ({"train": {"lora": {"r": "8"}}}, "train.lora.r: expected an integer, got str '8'"),
    ({"labelstudio": {"pii": {"kinds": "email"}}}, "labelstudio.pii.kinds: expected a list of strings"),
    ({"scale": {"runner": "ray"}}, "scale.runner: expected 'local' | 'dask', got str 'ray'"),
    ({"noise": "on"}, "noise: expected a mapping, got str"),
]


@pytest.mark.parametrize(("raw", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_wrong_types_and_unknown_keys_are_refused_with_their_key_path(raw: object, message: str) -> None:
    with pytest.raises(ParamsError) as exc:
        params_from_dict(raw, where="params.yaml")
    assert str(exc.value).startswith("params.yaml: ")
    assert message in str(exc.value)


def test_every_section_is_typed_and_the_repo_params_load() -> None:
    params = load_params(ROOT / "params.yaml")
    assert set(SECTIONS) == {
        "data", "dedup", "decontam", "noise", "review", "report", "gate", "train", "evaluate", "sweep",
        "scale", "labelstudio", "prediction_review", "instruction", "predict", "monitor", "semantic",
        "registry", "demo", "compare",
    }  # fmt: skip
    for name in SECTIONS:
        assert type(getattr(params, name)).__module__.startswith("schemas.")
    assert params.base_dir == ROOT and params.source == str(ROOT / "params.yaml")
    assert params == params_from_dict(json.loads(json.dumps(_as_raw(ROOT))))  # same values either way


def _as_raw(root: Path) -> dict:
    import yaml

    return yaml.safe_load((root / "params.yaml").read_text())


def test_null_sections_and_no_file_give_the_defaults(tmp_path: Path) -> None:
    assert params_from_dict(None) == Params()
    assert params_from_dict({"noise": None}).noise == Params().noise
    assert load_params(None) == Params()
    assert find_params(None, cwd=tmp_path) is None
    (tmp_path / "params.yaml").write_text("noise:\n  folds: 3\n")
    assert find_params(None, cwd=tmp_path) == tmp_path / "params.yaml"
    assert load_params(find_params(None, cwd=tmp_path)).noise.folds == 3


def test_unreadable_and_invalid_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="params file not found"):
        load_params(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("noise: [unclosed\n")
    with pytest.raises(ParamsError, match="bad.yaml: not valid YAML"):
        load_params(tmp_path / "bad.yaml")
    (tmp_path / "latin1.yaml").write_bytes(b"data:\n  text: caf\xe9\n")
    with pytest.raises(ParamsError, match="latin1.yaml: cannot read"):
        load_params(tmp_path / "latin1.yaml")


def test_label_set_files_are_checked(tmp_path: Path) -> None:
    (tmp_path / "labels.json").write_text('["a", "b",')
    with pytest.raises(ParamsError, match="labels.json: label set .* is not valid JSON"):
        load_label_set("labels.json", tmp_path)
    (tmp_path / "labels.json").write_text('{"a": 1}')
    with pytest.raises(ParamsError, match="must be a non-empty list"):
        load_label_set("labels.json", tmp_path)
    (tmp_path / "labels.json").write_text('[["nested"]]')
    with pytest.raises(ParamsError, match="must list strings"):
        load_label_set("labels.json", tmp_path)
    with pytest.raises(ParamsError, match="cannot read label set"):
        load_label_set("nowhere.txt", tmp_path)
    (tmp_path / "labels.txt").write_text("b\n\na\n")
    assert load_label_set("labels.txt", tmp_path) == ["b", "a"]


def test_the_cli_reports_a_bad_params_file_in_one_line(tmp_path: Path) -> None:
    from flows.cli import app

    (tmp_path / "params.yaml").write_text("noise:\n  enabled: 'no'\n")
    result = CliRunner().invoke(
        app, ["ingest", "--train", "x.jsonl", "--params", str(tmp_path / "params.yaml")]
    )
    assert result.exit_code == 2
    assert "noise.enabled: expected true/false" in result.output
    assert "Traceback" not in result.output
