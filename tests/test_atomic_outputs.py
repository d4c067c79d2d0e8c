"""Outputs are all or nothing: a curate killed while writing leaves the previous run (or, once
recovered, the new one), never a mix; one writer per directory; a file is not a directory."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest
import yaml
from filelock import FileLock

from flows.files import OutputError, output_lock, write_outputs
from schemas.gate import GateError, check_gate
from schemas.manifest import verify_manifest
from schemas.params import params_from_dict
from tests.conftest import ROOT
from tests.tiny_project import tiny_params, write_tiny_data

# Kill this very process (SIGKILL, no clean-up) at a point of the write phase, then run the CLI.
KILL_IN_MANIFEST = (
    "import os, signal, schemas.manifest as m, flows.files as f\n"
    "def die(*a, **k): os.kill(os.getpid(), signal.SIGKILL)\n"
    "f.write_manifest = die\n"
    "from flows.cli import main; main()"
)
KILL_BETWEEN_RENAMES = (
    "import os, signal, flows.files as f\n"
    "def half_swap(staging, out_dir):\n"
    "    os.rename(out_dir, out_dir.parent / f'.{out_dir.name}.old-{os.getpid()}')\n"
    "    os.kill(os.getpid(), signal.SIGKILL)\n"
    "f._swap_in = half_swap\n"
    "from flows.cli import main; main()"
)


def _digest(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()
    }


def _curate(root: Path, params: str, out: Path, launcher: str | None = None) -> subprocess.CompletedProcess:
    head = ["-c", launcher] if launcher else ["-m", "flows.cli"]
    raw = ("--train", str(root / "raw/train.csv"), "--test", str(root / "raw/test.csv"))
    args = [
        sys.executable,
        *head,
        "curate",
        *raw,
        "--params",
        str(root / params),
        "--out",
        str(out),
        "--quiet",
    ]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, check=False)


@pytest.mark.slow  # four curate processes
def test_a_curate_killed_while_writing_leaves_the_old_run_or_the_new_one(tmp_path: Path) -> None:
    write_tiny_data(tmp_path / "raw")
    first = tiny_params()
    first["data"]["labels"] = str(tmp_path / "raw/categories.json")
    second = {**first, "dedup": {**first["dedup"], "threshold": 0.5}}  # a run with other outputs
    (tmp_path / "a.yaml").write_text(yaml.safe_dump(first))
    (tmp_path / "b.yaml").write_text(yaml.safe_dump(second))
    out = tmp_path / "curated"
    done = _curate(tmp_path, "a.yaml", out)
    assert done.returncode == 0, done.stderr[-2000:]
    (out / "reviews.parquet").write_bytes(b"not ours")  # others' files in --out survive every run
    before = _digest(out)

    killed = _curate(tmp_path, "b.yaml", out, launcher=KILL_IN_MANIFEST)
    assert killed.returncode == -9  # SIGKILL, by its own PID, in the middle of the write phase
    assert _digest(out) == before  # exactly the previous run
    verify_manifest(out)
    gate = params_from_dict(first).gate
    from schemas.gate import make_gate_record, write_gate_record

    write_gate_record(out / "gate.json", make_gate_record(out, thresholds=gate, override=False))
    assert check_gate(out / "gate.json", out, thresholds=gate).allowed  # still the old, whole run

    cut = _curate(tmp_path, "b.yaml", out, launcher=KILL_BETWEEN_RENAMES)
    assert cut.returncode == -9
    assert not out.exists()  # the worst moment: neither in place ...
    with pytest.raises(GateError):  # ... and nothing is judged or trained on
        check_gate(out / "gate.json", out, thresholds=gate)
    recovered = _curate(tmp_path, "b.yaml", out)  # the next run puts the old one back first
    assert recovered.returncode == 0, recovered.stderr[-2000:]
    assert "restoring the previous complete run" in " ".join(recovered.stderr.split())  # rich wraps lines
    manifest = verify_manifest(out)
    assert (out / "reviews.parquet").read_bytes() == b"not ours"
    assert set(manifest.files) >= {"train.parquet", "quality.json", "held.parquet"}
    assert not [
        p for p in tmp_path.iterdir() if p.name.startswith(".curated.") and not p.name.endswith("lock")
    ]
    assert _digest(out) != before  # the new run's files, whole
    # the gate written for the old run does not pass the new files
    with pytest.raises(GateError, match="re-run `curagate gate`"):
        check_gate(out / "gate.json", out, thresholds=gate)


def test_a_second_writer_fails_at_once_and_says_why(tmp_path: Path) -> None:
    out = tmp_path / "curated"
    files = {"quality.json": json.dumps({"x": 1})}
    with FileLock(str(tmp_path / ".curated.lock")):
        with pytest.raises(OutputError, match="another curagate run is writing here"):
            write_outputs(files, out)
    write_outputs(files, out)  # the lock is free again
    assert verify_manifest(out).files["quality.json"].rows is None
    with output_lock(out), pytest.raises(OutputError):
        write_outputs(files, out)


def test_out_pointing_at_a_file_is_a_clear_error(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("mine")
    with pytest.raises(OutputError, match="exists and is not a directory"):
        write_outputs({"train.parquet": pl.DataFrame({"a": [1]})}, target)
    assert target.read_text() == "mine"


def test_out_may_not_be_the_working_directory_or_above_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("mine")
    for out in (Path("."), Path(".."), tmp_path):
        with pytest.raises(OutputError, match="directory of its own"):
            write_outputs({"quality.json": "{}"}, out)
    assert (tmp_path / "keep.txt").read_text() == "mine"
    write_outputs({"quality.json": "{}"}, Path("out/"))  # relative, trailing slash: fine
    assert verify_manifest(tmp_path / "out").files
    assert (tmp_path / "out").stat().st_mode & 0o755 == 0o755  # not mkdtemp's 0700
