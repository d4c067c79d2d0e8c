"""A hostile user at the production loop's commands: `curagate predict`, `monitor`, `registry
...`, `review push-predictions|pull-predictions`. Every case ends in one line naming the file,
line or option and the reason, a non-zero exit and no traceback; predict never leaves a
half-written file. The model is a fake here (a stand-in for training.predict's loaded
adapter): the files, the parsing and the CLI are real.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from flows.cli import app
from schemas.predictions import PREDICTIONS_SCHEMA
from tests.conftest import ROOT

LABELS = ("card_arrival", "exchange_rate")


@dataclass(frozen=True)
class FakePredictor:
    version: str = "md5-fake"


def fake_predict_texts(
    predictor: FakePredictor,
    texts: Sequence[str],
    *,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[list[str], list[float]]:
    """card_arrival for texts that mention a card, else exchange_rate; confidence by length."""
    if on_batch is not None:
        on_batch(len(texts))
    labels = [LABELS[0] if "card" in t.lower() else LABELS[1] for t in texts]
    return labels, [min(1.0, 0.3 + len(t) / 100) for t in texts]


@pytest.fixture
def fake_model(monkeypatch: pytest.MonkeyPatch) -> None:
    import training.predict

    monkeypatch.setattr(training.predict, "load_predictor", lambda *a, **k: FakePredictor())
    monkeypatch.setattr(training.predict, "predict_texts", fake_predict_texts)


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"escaped: {result.exception!r}\n{result.output}")
    return result.exit_code, result.output


def refused(*args: str, expect: str, code: int = 2) -> str:
    """The command fails with ``code`` and exactly one error line containing ``expect``."""
    exit_code, output = invoke(*args)
    assert exit_code == code, output
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and expect in errors[0], output
    return errors[0]


def _jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty directory with no params.yaml as the cwd: the built-in defaults apply."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ── predict ──────────────────────────────────────────────────────────────────────────


def test_predict_refuses_unusable_traffic_files_with_the_file_and_reason(
    workdir: Path, fake_model: None
) -> None:
    (workdir / "adir").mkdir()
    (workdir / "empty.jsonl").write_bytes(b"")
    _jsonl(workdir / "bad.jsonl", ["{broken", "[1, 2]", ""])
    _jsonl(workdir / "types.jsonl", [{"text": 5}, {"text": ["a"]}, {"txt": "x"}])
    text = '{"text": "where is my card"}\n'
    (workdir / "utf16.jsonl").write_bytes(text.encode("utf-16"))
    (workdir / "utf16be.jsonl").write_bytes(text.encode("utf-16-be"))  # no byte order mark
    (workdir / "latin1.jsonl").write_bytes('{"text": "où est ma carte"}\n'.encode("latin-1"))
    cases = {
        "nope.jsonl": "nope.jsonl: file not found",
        "adir": "adir: not a file",
        "empty.jsonl": "empty.jsonl: empty file",
        "bad.jsonl": "bad.jsonl: no line holds a JSON object (line 1: invalid_json",
        "types.jsonl": "types.jsonl: no valid line to predict (text_wrong_type 2, missing_text 1; line 1:",
        "utf16.jsonl": "utf16.jsonl: UTF-16-LE text (byte order mark ff fe); save it as UTF-8",
        "utf16be.jsonl": "UTF-16/32 text without a byte order mark",
        "latin1.jsonl": "latin1.jsonl: no line holds a JSON object (line 1: invalid_utf8",
    }
    for name, expect in cases.items():
        refused("predict", "--in", name, "--out", "p.parquet", "--no-progress", expect=expect)
    assert not (workdir / "p.parquet").exists()  # nothing written for a refused input


def test_predict_in_an_empty_directory_names_the_missing_model(workdir: Path) -> None:
    _jsonl(workdir / "t.jsonl", [{"text": "where is my card"}])
    refused("predict", "--in", "t.jsonl", "--no-progress", expect="models/training.json: not found")
    refused("predict", "--in", "t.jsonl", "--model-dir", "nomodel", "--no-progress",
            expect="nomodel/training.json: not found; run `curagate train` first")  # fmt: skip
    (workdir / "m").mkdir()
    (workdir / "m" / "training.json").write_text("{not json")
    refused(
        "predict",
        "--in",
        "t.jsonl",
        "--model-dir",
        "m",
        "--no-progress",
        expect="m/training.json: unreadable",
    )
    record = {"task": "classification", "label_set": ["a"], "params": {"base_model": "smollm2"}}
    (workdir / "m" / "training.json").write_text(json.dumps(record))
    refused("predict", "--in", "t.jsonl", "--model-dir", "m", "--no-progress",
            expect="m/adapter: no adapter (adapter_config.json missing)")  # fmt: skip
    assert not list(workdir.glob("*.parquet"))


def test_predict_refuses_bad_options_and_outputs(workdir: Path, fake_model: None) -> None:
    _jsonl(workdir / "t.jsonl", [{"text": "where is my card"}])
    (workdir / "out").mkdir()
    refused("predict", "--in", "t.jsonl", "--out", "out", "--no-progress", expect="out: is a directory")
    (workdir / "afile").write_text("x")
    refused("predict", "--in", "t.jsonl", "--out", "afile/p.parquet", "--no-progress",
            expect="cannot write under afile: it is a file, not a directory")  # fmt: skip
    refused("predict", "--in", "t.jsonl", "--sample-rows", "many", "--no-progress",
            expect="--sample-rows 'many': a number of rows")  # fmt: skip
    (workdir / "params.yaml").write_text("predict: {batch_size: 0}\n")
    refused("predict", "--in", "t.jsonl", "--no-progress", expect="params.yaml")


def test_predict_quarantines_bad_lines_and_bad_times_and_labels_the_rest(
    workdir: Path, fake_model: None
) -> None:
    _jsonl(
        workdir / "t.jsonl",
        [
            {"text": "where is my card", "received_at": "2026-11-30T09:00:00Z"},
            "{broken",
            {"text": "euro rate today", "received_at": "yesterday"},
            {"text": 7, "received_at": "2026-11-30T09:01:00Z"},
            {"text": "rate for dollars", "received_at": "2026-11-30 11:02:00+02:00"},
        ],
    )
    code, output = invoke("predict", "--in", "t.jsonl", "--out", "o/p.parquet", "--no-progress")
    assert code == 0, output
    frame = pl.read_parquet(workdir / "o" / "p.parquet")
    assert frame["text"].to_list() == ["where is my card", "rate for dollars"]
    assert frame["predicted_at"].to_list() == ["2026-11-30T09:00:00Z", "2026-11-30T09:02:00Z"]  # UTC
    bad = pl.read_parquet(workdir / "o" / "p.quarantine.parquet")
    assert bad.select("line", "reason").rows() == [
        (2, "invalid_json"),
        (3, "invalid_time"),
        (4, "text_wrong_type"),
    ]
    assert "received_at: yesterday is not an ISO-8601 time" in bad["detail"][1]
    # a BOM-prefixed UTF-8 file reads like any other; a partly latin-1 file loses only its bad lines
    (workdir / "mixed.jsonl").write_bytes(
        b"\xef\xbb\xbf"
        + '{"text": "my card"}\n{"text": "carte à puce"}\n'.replace("à", "\xe0").encode("latin-1")
    )
    code, output = invoke("predict", "--in", "mixed.jsonl", "--out", "m.parquet", "--no-progress")
    assert code == 0, output
    assert pl.read_parquet(workdir / "m.parquet")["text"].to_list() == ["my card"]
    assert pl.read_parquet(workdir / "m.quarantine.parquet")["reason"].to_list() == ["invalid_utf8"]


def test_predict_interrupted_mid_write_leaves_the_previous_files(
    workdir: Path, fake_model: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import training.predict

    _jsonl(workdir / "t.jsonl", [{"text": f"card number {i}"} for i in range(6)])
    (workdir / "params.yaml").write_text("predict: {chunk_rows: 2}\n")
    code, output = invoke("predict", "--in", "t.jsonl", "--out", "p.parquet", "--no-progress")
    assert code == 0, output
    before = {p.name: p.read_bytes() for p in workdir.glob("p*.parquet")}
    assert set(before) == {"p.parquet", "p.quarantine.parquet"}
    calls = []

    def dies_on_the_second_chunk(*args: object, **kwargs: object) -> tuple[list[str], list[float]]:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C (and SIGTERM, which the command turns into an exit)
        return fake_predict_texts(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(training.predict, "predict_texts", dies_on_the_second_chunk)
    _jsonl(workdir / "t.jsonl", [{"text": f"new card {i}"} for i in range(6)] + ["{broken"])
    result = CliRunner().invoke(app, ["predict", "--in", "t.jsonl", "--out", "p.parquet", "--no-progress"])
    assert result.exit_code != 0 and len(calls) == 2  # click turns Ctrl-C into "Aborted!", exit 1
    assert {p.name: p.read_bytes() for p in workdir.glob("p*.parquet")} == before
    assert not list(workdir.glob(".*.tmp"))


@pytest.mark.slow  # a subprocess importing torch, killed with SIGKILL and with SIGTERM
def test_predict_killed_leaves_no_half_written_file_and_the_next_run_cleans_up(tmp_path: Path) -> None:
    runner = tmp_path / "slow_predict.py"
    runner.write_text(
        "import sys, time\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "DELAY = float(sys.argv[1])\n"
        "import training.predict as tp\n"
        "from tests.test_production_hostile import FakePredictor, fake_predict_texts\n"
        "def slow(*a, **k):\n"
        "    time.sleep(DELAY)\n"
        "    return fake_predict_texts(*a, **k)\n"
        "tp.load_predictor = lambda *a, **k: FakePredictor()\n"
        "tp.predict_texts = slow\n"
        "from flows.cli import main\n"
        "sys.argv = ['curagate', 'predict', '--in', 't.jsonl', '--out', 'p.parquet', '--no-progress']\n"
        "main()\n"
    )
    _jsonl(tmp_path / "t.jsonl", [{"text": f"card {i}"} for i in range(8)])
    (tmp_path / "params.yaml").write_text("predict: {chunk_rows: 2}\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start(delay: str) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(runner), delay], cwd=tmp_path, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip

    def wait_for_temporary(proc: subprocess.Popen) -> None:
        deadline = time.monotonic() + 120
        while not (tmp_path / f".p.parquet.{proc.pid}.tmp").exists():  # this run's own
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            assert time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(1.5)  # inside the chunks: the temporary file holds some rows

    killed = start("1.0")
    wait_for_temporary(killed)
    killed.kill()
    killed.wait()
    assert not (tmp_path / "p.parquet").exists() and not (tmp_path / "p.quarantine.parquet").exists()
    assert list(tmp_path.glob(".p.parquet.*.tmp"))  # SIGKILL runs no clean-up...

    terminated = start("1.0")
    wait_for_temporary(terminated)
    terminated.send_signal(signal.SIGTERM)
    assert terminated.wait(timeout=60) == 128 + signal.SIGTERM
    assert not (tmp_path / "p.parquet").exists()
    # ...the next run removes what the killed one left; SIGTERM's run removed its own
    assert not list(tmp_path.glob(".*.tmp"))

    done = subprocess.run(
        [sys.executable, str(runner), "0"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert pl.read_parquet(tmp_path / "p.parquet").height == 8 and not list(tmp_path.glob(".*.tmp"))


# ── monitor ──────────────────────────────────────────────────────────────────────────


def _predictions(n: int = 3) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "text": [f"where is my card {i}" for i in range(n)],
            "label": [LABELS[0]] * n,
            "confidence": [0.9] * n,
            "model_version": ["md5-fake"] * n,
            "predicted_at": ["2026-11-30T09:00:00Z"] * n,
        },
        schema=PREDICTIONS_SCHEMA,
    )


def test_monitor_refuses_unusable_inputs_with_the_file_and_reason(workdir: Path) -> None:
    refused("monitor", "--predictions", "p.parquet", expect="data/curated/train.parquet: not found")
    curated = workdir / "curated"
    curated.mkdir()
    pl.DataFrame({"text": ["where is my card"] * 5, "label": [LABELS[0]] * 5}).write_parquet(
        curated / "train.parquet"
    )
    args = ("monitor", "--reference", "curated", "--out", "mon")
    refused(*args, "--predictions", "nope.parquet", expect="nope.parquet: predictions file not found")
    (workdir / "adir").mkdir()
    refused(*args, "--predictions", "adir", expect="adir: is a directory")
    (workdir / "text.parquet").write_text("id,text\n1,hello\n")
    refused(*args, "--predictions", "text.parquet", expect="text.parquet: unreadable Parquet")
    _predictions().with_columns(pl.col("confidence").cast(pl.String)).write_parquet(workdir / "types.parquet")
    refused(
        *args,
        "--predictions",
        "types.parquet",
        expect="types.parquet: not a predictions file: confidence (String",
    )
    _predictions().with_columns(confidence=pl.lit(3.0)).write_parquet(workdir / "range.parquet")
    refused(
        *args,
        "--predictions",
        "range.parquet",
        expect="range.parquet: 3 row(s) with a null label or a confidence",
    )
    _predictions(0).write_parquet(workdir / "empty.parquet")
    refused(*args, "--predictions", "empty.parquet", expect="empty.parquet:")
    _predictions().write_parquet(workdir / "p.parquet")
    refused(*args, "--predictions", "p.parquet", "--baseline-predictions", "nob.parquet",
            expect="nob.parquet: predictions file not found")  # fmt: skip
    refused(*args, "--predictions", "p.parquet", "--model-dir", "nomodel",
            expect="nomodel/adapter: no adapter files")  # fmt: skip
    (workdir / "afile").write_text("x")
    refused("monitor", "--reference", "curated", "--predictions", "p.parquet", "--out", "afile",
            expect="afile: cannot write the report there: afile is a file")  # fmt: skip
    assert not (workdir / "mon" / "monitor.json").exists()


# ── review push-predictions / pull-predictions ───────────────────────────────────────


def test_review_of_predictions_refuses_bad_files_and_no_server(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "not-a-real-token")
    push = ("review", "push-predictions", "--predictions")
    refused(*push, "nope.parquet", expect="nope.parquet: predictions file not found")
    (workdir / "adir").mkdir()
    refused(*push, "adir", expect="adir: is a directory")
    _predictions().drop("confidence").write_parquet(workdir / "cols.parquet")
    refused(*push, "cols.parquet", expect="cols.parquet: column 'confidence' missing")
    (workdir / "junk.parquet").write_bytes(b"PAR1 not really")
    refused(*push, "junk.parquet", expect="junk.parquet: unreadable predictions Parquet")
    _predictions().write_parquet(workdir / "p.parquet")
    refused(*push, "p.parquet", expect="127.0.0.1:9")
    refused("review", "pull-predictions", expect="127.0.0.1:9")


# ── registry ─────────────────────────────────────────────────────────────────────────


def test_registry_refuses_bad_options_before_touching_the_registry(workdir: Path) -> None:
    refused("registry", "show", expect="mlruns/mlflow.db: no registry yet")
    refused("registry", "rollback", expect="mlruns/mlflow.db: no registry yet")
    refused("registry", "rollback", "--to", "champion", expect="--to 'champion': a model version is a number")
    refused("registry", "rollback", "--to", "-1", expect="--to '-1': a model version is a number")
    (workdir / "afile").write_text("x")
    refused("registry", "pull", "--to", "afile", expect="afile is a file, not a directory")
    refused("registry", "pull", "--to", "afile/sub", expect="afile is a file, not a directory")
    refused("registry", "pull", expect="no registry yet")
    (workdir / "reports").mkdir()
    for name in ("eval.json", "eval_detail.json", "eval.html"):
        (workdir / "reports" / name).write_text("{}")
    (workdir / "out.json").mkdir()
    # the decision could not be written: refused before the champion alias could move
    refused("registry", "promote", "--out", "out.json", expect="out.json: is a directory")
    refused("registry", "promote", "--eval", "reports", expect="reports: is a directory, not a file")
    refused("registry", "promote", expect="reports/eval_detail.json: no per-row test answers")
    refused("registry", "log", "--eval", "reports", expect="reports: is a directory, not a file")


@pytest.mark.slow  # a real SQLite MLflow backend (~10 s to create its schema)
def test_registry_pull_gives_a_model_dir_predict_can_serve_and_names_unknown_versions(workdir: Path) -> None:
    from tests.test_registry import _adapter, _right, _write_params
    from training.predict import PredictorError, read_training_record

    _write_params(workdir)
    first = _adapter(workdir, "a", _right(270))
    files = [str(first[k]) for k in ("model_dir", "eval_json", "detail_json", "html")]
    code, output = invoke("registry", "promote", "--model-dir", files[0], "--eval", files[1],
                          "--detail", files[2], "--html", files[3])  # fmt: skip
    assert code == 0, output
    code, output = invoke("registry", "pull", "--to", "served")
    assert code == 0, output
    served = workdir / "served"  # adapter/ and training.json: what predict's --model-dir needs
    assert (served / "training.json").read_bytes() == (first["model_dir"] / "training.json").read_bytes()
    assert (served / "adapter" / "adapter_config.json").is_file()
    # this stand-in's training.json has no label set: predict names that, past the missing files
    with pytest.raises(PredictorError, match="served/training.json: no label_set recorded"):
        read_training_record(served)
    refused("registry", "rollback", "--to", "99", expect="no version '99'")
    refused("registry", "rollback", expect="nothing to roll back to")


def test_monitor_baseline_is_a_seeded_sample_cached_per_version_and_size(
    workdir: Path, fake_model: None
) -> None:
    from flows.monitoring import baseline_predictions
    from schemas.params import params_from_dict

    curated = workdir / "curated"
    curated.mkdir()
    texts = [f"card question {i}" for i in range(10)]
    pl.DataFrame(
        {"id": [f"t{i}" for i in range(10)], "text": texts, "label": [LABELS[0]] * 10}
    ).write_parquet(curated / "test.parquet")

    def run(rows: int | None) -> pl.DataFrame:
        params = params_from_dict({"monitor": {"baseline_rows": rows}, "predict": {"model_version": "v1"}})
        path = baseline_predictions(curated, workdir / "mon", params=params, model_dir=workdir / "m",
                                    predictor=FakePredictor(version="v1"))  # fmt: skip
        return pl.read_parquet(path)

    four = run(4)
    assert four.height == 4 and set(four["text"]) <= set(texts)
    assert four["text"].to_list() == sorted(four["text"].to_list(), key=texts.index)  # in file order
    stamp = (workdir / "mon" / "baseline_predictions.parquet").stat().st_mtime_ns
    assert run(4).equals(four)
    assert (workdir / "mon" / "baseline_predictions.parquet").stat().st_mtime_ns == stamp  # cached
    assert run(6).height == 6 and run(None).height == 10  # another size: predicted again
