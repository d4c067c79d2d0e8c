"""Integration: a real `prefect server start`, `curagate serve` in a second process, and
`prefect deployment run 'curate-dataset/local' --param ... --watch` on tiny data."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from schemas.manifest import file_md5
from tests.tiny_project import CURATED_FILES, tiny_params, venv_env, write_tiny_data

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
GIVE_UP_S = 300  # how long to wait for a process to come up before failing the test


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except OSError:
        return 0


def _wait_for(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + GIVE_UP_S
    while time.monotonic() < deadline:
        if _get(url) == 200:
            return
        assert proc.poll() is None, f"exited {proc.returncode}: {log.read_text()[-3000:]}"
        time.sleep(1)
    raise AssertionError(f"{url} not ready after {GIVE_UP_S}s: {log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group (server workers, flow-run subprocesses), then SIGKILL."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[dict[str, str]]:
    port = _free_port()
    env = venv_env(
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
    )
    log = tmp_path / "server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_for(f"http://127.0.0.1:{port}/api/health", proc, log)
        yield env
    finally:
        _stop(proc)


def test_deployment_run_curates_through_a_served_deployment(server: dict[str, str], tmp_path: Path) -> None:
    project = tmp_path / "project"
    write_tiny_data(project / "raw")
    params = tiny_params()
    params["data"]["labels"] = "raw/categories.json"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        serve = subprocess.Popen(
            [str(BIN / "curagate"), "serve"], cwd=project, env=server, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        api = server["PREFECT_API_URL"]
        for name in ("curate-dataset", "train-adapter", "pipeline", "review-sync"):
            _wait_for(f"{api}/deployments/name/{name}/local", serve, log)
        run = subprocess.run(
            [str(BIN / "prefect"), "deployment", "run", "curate-dataset/local",
             "--param", "train=raw/train.csv", "--param", "test=raw/test.csv",
             "--param", "params_path=params.yaml", "--param", "out=curated", "--watch"],
            cwd=project, env=server, capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
    finally:
        _stop(serve)

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:] + log.read_text()[-3000:]
    assert "Completed" in run.stdout + run.stderr
    curated = project / "curated"
    for name in (*CURATED_FILES, "gate.json", "report.html"):
        assert (curated / name).is_file(), name
    gate = json.loads((curated / "gate.json").read_text())
    assert gate["passed"] is True and gate["quality_md5"] == file_md5(curated / "quality.json")
    assert json.loads((curated / "quality.json").read_text())["accounting_ok"] == 1
