"""`curagate curate` end to end on seeded corruption: accounting, reasons, determinism, report."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from curation.corrupt import corrupt
from tests.conftest import ROOT, write_lines

OUTPUTS = (
    "train.parquet",
    "test.parquet",
    "removed.parquet",
    "quarantine.parquet",
    "flags.parquet",
    "held.parquet",
    "manifest.json",
    "quality.json",
    "labels.json",
)


def _run_stage(stage: str, root: Path, out: str) -> subprocess.CompletedProcess:
    """`curagate <stage>` on the corrupted files in ``root``, writing to ``root/out``."""
    files = ("--train", str(root / "train.jsonl"), "--test", str(root / "test.jsonl"))
    params = ("--params", str(root / "params.yaml"), "--out", str(root / out), "--quiet")
    return _curagate(stage, *files, *params, cwd=ROOT)


def _curagate(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )


@pytest.fixture(scope="module")
def corrupted(tmp_path_factory, banking_train, banking_test, banking_labels):
    root = tmp_path_factory.mktemp("corrupted")
    lines, test_lines, truth = corrupt(
        banking_train.head(1500), banking_test.head(400), labels=banking_labels, seed=5, malformed_rate=0.01
    )
    write_lines(root / "train.jsonl", lines)
    write_lines(root / "test.jsonl", test_lines)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["columns"]["label"] = "label"
    params["data"]["labels"] = str(ROOT / "data" / "raw" / "categories.json")
    params["noise"]["folds"] = 3
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root, truth, len(lines), len(test_lines)


def _curate_into(root: Path, name: str) -> Path:
    proc = _run_stage("curate", root, name)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / name


@pytest.fixture(scope="module")
def curated(corrupted):
    root, *_ = corrupted
    return [_curate_into(root, "run1")]


@pytest.fixture(scope="module")
def curated_twice(corrupted, curated):
    """A second process on the same inputs: set order and hashing must not leak in."""
    root, *_ = corrupted
    return [curated[0], _curate_into(root, "run2")]


def test_every_input_row_is_accounted_for(corrupted, curated) -> None:
    _, truth, n_train, n_test = corrupted
    out = curated[0]
    quality = json.loads((out / "quality.json").read_text())
    train = pl.read_parquet(out / "train.parquet")
    removed = pl.read_parquet(out / "removed.parquet")
    held = pl.read_parquet(out / "held.parquet")
    quarantine = pl.read_parquet(out / "quarantine.parquet")
    test = pl.read_parquet(out / "test.parquet")
    assert quality["accounting_ok"] == 1
    assert quality["input_train_rows"] == n_train and quality["input_test_rows"] == n_test
    quarantined_train = quarantine.filter(pl.col("split") == "train").height
    assert train.height + removed.height + held.height + quarantined_train == n_train
    assert test.height + quarantine.filter(pl.col("split") == "test").height == n_test
    # exactly one destination per row
    assert not set(train["id"]) & set(removed["id"])
    assert not (set(train["id"]) | set(removed["id"])) & set(held["id"])
    assert removed["id"].n_unique() == removed.height


def test_malformed_lines_are_quarantined_with_their_reason_and_clean_ones_are_not(corrupted, curated) -> None:
    _, truth, *_ = corrupted
    quarantine = pl.read_parquet(curated[0] / "quarantine.parquet").filter(pl.col("split") == "train")
    got = dict(zip(quarantine["line"].to_list(), quarantine["reason"].to_list(), strict=True))
    assert got == truth.malformed
    assert quarantine["raw"].null_count() == 0


def test_flagged_rows_are_held_out_of_training(curated) -> None:
    out = curated[0]
    train_ids = set(pl.read_parquet(out / "train.parquet")["id"])
    flags = pl.read_parquet(out / "flags.parquet")
    held = pl.read_parquet(out / "held.parquet")
    assert flags.height > 0
    assert not train_ids & set(flags["id"])
    pending = set(held.filter(pl.col("reason") == "pending_review")["id"])
    assert set(flags["id"]) == pending
    assert "pending_review" not in set(pl.read_parquet(out / "removed.parquet")["reason"])
    assert set(flags["issue"]) <= {"label_issue", "conflicting_duplicate"}


@pytest.mark.slow  # a second full curate process (~8 s); the fast tier keeps one
def test_outputs_are_byte_identical_across_processes(curated_twice) -> None:
    a, b = curated_twice
    for name in OUTPUTS:
        assert (
            hashlib.sha256((a / name).read_bytes()).digest()
            == hashlib.sha256((b / name).read_bytes()).digest()
        ), name


@pytest.mark.slow  # a temporary Dask cluster and Prefect's ephemeral server
def test_dask_runner_gives_the_same_files(corrupted, curated) -> None:
    """`scale.runner: dask` shards the signatures of the same `curagate curate` over a local
    Dask cluster (no Prefect server set up beforehand): every curated file is byte-identical."""
    root, *_ = corrupted
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["scale"] = {"runner": "dask", "shards": 2}
    (root / "params_dask.yaml").write_text(yaml.safe_dump(params))
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(root / "prefect_home")  # the ephemeral server's database, not ~/.prefect
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")  # slow on a busy 2-core box
    files = ("--train", str(root / "train.jsonl"), "--test", str(root / "test.jsonl"))
    proc = _curagate(
        "curate",
        *files,
        "--params",
        str(root / "params_dask.yaml"),
        "--out",
        str(root / "dask"),
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "sharded-signatures" in proc.stdout + proc.stderr  # the flow that ran the shards
    for name in OUTPUTS:
        assert (root / "dask" / name).read_bytes() == (curated[0] / name).read_bytes(), name


def test_report_has_every_section(curated) -> None:
    html = (curated[0] / "report.html").read_text()
    for heading in (
        "Rows per stage",
        "Why rows left",
        "Duplicate cluster sizes",
        "Label distribution",
        "Noise scores",
        "flagged examples",
        "Quarantined lines",
    ):
        assert heading in html, heading
    assert "http://" not in html and "https://" not in html  # opens offline
    assert html.count("data:image/png;base64,") >= 5


def test_a_stage_subcommand_runs_its_upstream_stages_alone(corrupted) -> None:
    root, truth, *_ = corrupted
    proc = _run_stage("dedup", root, "dedup_only")
    assert proc.returncode == 0, proc.stderr[-2000:]
    removed = pl.read_parquet(root / "dedup_only" / "removed.parquet")
    assert set(removed["stage"]) == {"dedup"}
    assert (root / "dedup_only" / "dedup_train.parquet").exists()
    assert not (root / "dedup_only" / "train.parquet").exists()


def test_whole_file_error_exits_with_a_message(tmp_path: Path) -> None:
    (tmp_path / "train.txt").write_text("hello")
    proc = _curagate(
        "curate",
        "--train",
        str(tmp_path / "train.txt"),
        "--test",
        str(tmp_path / "t.jsonl"),
        "--out",
        str(tmp_path / "o"),
        cwd=ROOT,
    )
    assert proc.returncode == 2
    # rich wraps long lines at a space: compare with whitespace runs collapsed
    assert "train.txt: unknown format '.txt'" in " ".join(proc.stderr.split())


def test_remembered_signatures_compute_each_text_once() -> None:
    from curation.minhash import signatures
    from flows.signing import RememberedSignatures

    calls: list[list[str]] = []

    def compute(texts):
        calls.append(list(texts))
        return signatures(texts, kind="char", ngram=3, num_perm=16, seed=1)

    signer = RememberedSignatures(compute)
    first = signer(["card lost", "top up", ""])
    again = signer(["top up", "new text", "card lost", "top up"])
    expected = signatures(
        ["top up", "new text", "card lost", "top up"], kind="char", ngram=3, num_perm=16, seed=1
    )
    assert np.array_equal(again, expected) and again.dtype == np.uint32
    assert np.array_equal(
        first, signatures(["card lost", "top up", ""], kind="char", ngram=3, num_perm=16, seed=1)
    )
    assert calls == [["card lost", "top up", ""], ["new text"]]
    assert signer([]).shape == (0, 16)
    signer.forget()
    signer(["top up"])
    assert calls[-1] == ["top up"]  # forgotten: signed again


def test_remembered_signatures_gather_across_blocks_and_go_after_the_last_reuse() -> None:
    from curation.minhash import signatures
    from flows.signing import RememberedSignatures

    def sign(texts):
        return signatures(list(texts), kind="char", ngram=3, num_perm=16, seed=1)

    calls: list[list[str]] = []
    signer = RememberedSignatures(lambda texts: calls.append(list(texts)) or sign(texts))
    signer(["a card", "b top up"])
    signer(["c new", "d other"])  # all new: a second block, nothing copied
    assert len(signer.blocks) == 2
    mixed = ["d other", "a card", "c new", "b top up", "a card"]
    assert np.array_equal(signer(mixed), sign(mixed))  # rows from both blocks, in query order
    signer.keep = False  # the pipeline's last signing step
    assert np.array_equal(signer(["b top up"]), sign(["b top up"]))
    assert signer.blocks == [] and signer.size == 0  # answered from memory, then forgotten
    assert np.array_equal(signer(["a card"]), sign(["a card"]))
    assert calls[-1] == ["a card"]  # signed afresh
