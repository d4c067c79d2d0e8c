"""The exploration notebook runs top to bottom on a real (tiny) curate output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from curation.corrupt import corrupt
from tests.conftest import ROOT, write_lines


@pytest.mark.slow  # a curate subprocess and a Jupyter kernel (~10 s)
def test_explore_notebook_executes(
    tmp_path: Path, banking_train, banking_test, banking_labels, monkeypatch
) -> None:
    lines, test_lines, _ = corrupt(
        banking_train.head(300), banking_test.head(100), labels=banking_labels, seed=2
    )
    write_lines(tmp_path / "train.jsonl", lines)
    write_lines(tmp_path / "test.jsonl", test_lines)
    params = tmp_path / "params.yaml"
    params.write_text(f"data:\n  labels: {ROOT / 'data/raw/categories.json'}\nnoise:\n  folds: 2\n")
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "curate",
            "--train",
            str(tmp_path / "train.jsonl"),
            "--test",
            str(tmp_path / "test.jsonl"),
            "--params",
            str(params),
            "--out",
            str(out),
            "--quiet",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    monkeypatch.setenv("CURAGATE_OUT", str(out))
    notebook = nbformat.read(ROOT / "notebooks" / "explore_run.ipynb", as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), (
        "commit notebooks stripped"
    )
    NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT / "notebooks")}},
    ).execute()
    texts = "".join(str(o) for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "accounting ok: True" in texts
    assert "Traceback" not in texts
