"""Integration: a real Label Studio server, push -> annotate via the API -> pull -> push again.

The server runs from its own venv, created by the same code path as `curagate labelstudio
start` (flows.labelstudio.start_server -> ensure_venv); the first run installs it (minutes).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from flows.labelstudio import (
    ServerState,
    _http_status,
    connect,
    find_project,
    list_tasks,
    pull_reviews,
    push_flags,
    start_server,
    stop_server,
)
from schemas.params import params_from_dict
from schemas.records import Review
from schemas.review_params import LabelStudioParams

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
LABELS = ["card_arrival", "lost_or_stolen_card", "top_up_failed", "exchange_rate"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _flags(n: int) -> pl.DataFrame:
    texts = [
        "I lost my card, email me at jane.doe@example.com",
        "where is my new card, call +44 20 7946 0958",
        "top up failed with card 4111 1111 1111 1111",
        "what rate do you use, order 12345678",
        "my card still has not arrived",
        "exchange rate for my transfer to DE89370400440532013000",
    ]
    return pl.DataFrame(
        {
            "id": [f"row{i}" for i in range(n)],
            "text_hash": [f"hash{i}" for i in range(n)],
            "text": texts[:n],
            "issue": (["label_issue", "conflicting_duplicate"] * 3)[:n],
            "score": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6][:n],
            "given_label": [
                "card_arrival",
                "card_arrival",
                "exchange_rate",
                "top_up_failed",
                "lost_or_stolen_card",
                "card_arrival",
            ][:n],  # fmt: skip
            "suggested_label": [
                "lost_or_stolen_card",
                None,
                "top_up_failed",
                "exchange_rate",
                "card_arrival",
                "exchange_rate",
            ][:n],  # fmt: skip
            "duplicate_of": [None, "row9", None, None, None, None][:n],
        }
    )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerState, Path]]:
    """A fresh Label Studio on a free port with a temporary data dir; params pointing at it."""
    data_dir = tmp_path_factory.mktemp("ls-data")
    raw = {
        "labelstudio": {
            "project_title": "curagate integration",
            "server": {"venv": str(ROOT / ".venv-labelstudio"), "data_dir": str(data_dir)},
        }
    }
    params = data_dir / "params.yaml"
    params.write_text(yaml.safe_dump(raw), encoding="utf-8")
    cfg = params_from_dict({"labelstudio": raw["labelstudio"]}).labelstudio
    with pytest.MonkeyPatch.context() as mp:
        # the client must find the server through the recorded state, not a developer's env
        mp.delenv("LABEL_STUDIO_URL", raising=False)
        mp.delenv("LABEL_STUDIO_API_KEY", raising=False)
        mp.delenv("LABEL_STUDIO_USER_TOKEN", raising=False)
        mp.delenv("LABEL_STUDIO_PASSWORD", raising=False)
        state = start_server(cfg.server, port=_free_port(), data_dir=data_dir)
        try:
            yield state, params
        finally:
            stop_server(data_dir, timeout_s=cfg.server.stop_timeout_s)


def _choice(tag: str, value: str) -> dict:
    return {"from_name": tag, "to_name": "text", "type": "choices", "value": {"choices": [value]}}


def test_push_annotate_pull_push_again(server: tuple[ServerState, Path], tmp_path: Path) -> None:
    state, params_path = server
    cfg: LabelStudioParams = params_from_dict(
        {"labelstudio": yaml.safe_load(params_path.read_text())["labelstudio"]}
    ).labelstudio
    assert _http_status(f"{state.url}/health") == 200
    out = tmp_path / "curated"
    out.mkdir()
    _flags(5).write_parquet(out / "flags.parquet")
    (out / "labels.json").write_text(json.dumps(LABELS), encoding="utf-8")

    ls = connect(cfg)
    first = push_flags(ls, out, cfg)
    assert (first.imported, first.skipped, first.existing_tasks) == (5, 0, 0)
    assert first.pii_masked == {"email": 1, "phone": 1, "card": 1, "iban": 0}

    project_id = find_project(ls, cfg.project_title)
    assert project_id == first.project_id
    tasks = {t["data"]["flag_id"]: t for t in list_tasks(ls, project_id, page_size=cfg.page_size)}
    assert sorted(tasks) == [f"row{i}" for i in range(5)]
    sent = " ".join(t["data"]["text"] for t in tasks.values())
    assert "jane.doe@example.com" not in sent and "4111" not in sent and "7946" not in sent
    assert "order 12345678" in sent  # an order number is not PII
    prediction = tasks["row0"]["predictions"][0]
    assert prediction["model_version"] == cfg.model_version
    assert prediction["result"][0]["value"]["choices"] == ["lost_or_stolen_card"]

    # an annotator: relabel one, drop one, keep one; row3 and row4 stay open
    ls.annotations.create(
        id=tasks["row0"]["id"],
        result=[_choice("decision", "relabel"), _choice("label", "lost_or_stolen_card")],
    )
    ls.annotations.create(id=tasks["row1"]["id"], result=[_choice("decision", "drop")])
    ls.annotations.create(id=tasks["row2"]["id"], result=[_choice("decision", "keep")])

    reviews_path = tmp_path / "reviews.parquet"
    pulled = pull_reviews(ls, reviews_path, cfg)
    assert pulled.reviews == 3
    reviews = Review.validate(pl.read_parquet(reviews_path))
    got = {r["id"]: (r["decision"], r["label"], r["text_hash"]) for r in reviews.iter_rows(named=True)}
    assert got == {
        "row0": ("relabel", "lost_or_stolen_card", "hash0"),
        "row1": ("drop", None, "hash1"),
        "row2": ("keep", None, "hash2"),
    }
    assert set(reviews["task_id"].to_list()) == {tasks[k]["id"] for k in ("row0", "row1", "row2")}
    assert reviews["annotator"].to_list() == [cfg.server.username] * 3

    # second push through the CLI: same five flags plus one new -> only the new one is imported
    _flags(6).write_parquet(out / "flags.parquet")
    import typer

    from flows.review_commands import register

    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["review", "push", "--out", str(out), "--params", str(params_path)])
    assert result.exit_code == 0, result.output
    after = list_tasks(ls, project_id, page_size=cfg.page_size)
    keys = [(t["data"]["flag_id"], t["data"]["text_hash"]) for t in after]
    assert len(keys) == len(set(keys)) == 6
    annotated = {t["data"]["flag_id"]: len(t["annotations"]) for t in after}
    assert annotated == {"row0": 1, "row1": 1, "row2": 1, "row3": 0, "row4": 0, "row5": 0}
    again = push_flags(ls, out, cfg)
    assert (again.imported, again.skipped) == (0, 6)

    # pull through the CLI writes the same reviews
    cli_path = tmp_path / "cli_reviews.parquet"
    result = CliRunner().invoke(app, ["review", "pull", "--to", str(cli_path), "--params", str(params_path)])
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(cli_path).equals(pl.read_parquet(reviews_path))


def test_prediction_review_round_trip(server: tuple[ServerState, Path], tmp_path: Path) -> None:
    """push-predictions -> annotate via the API -> pull-predictions (CLI) -> push again: nothing new."""
    import typer

    from flows.labelstudio import pull_prediction_reviews, push_prediction_sample
    from flows.review_commands import register

    _, params_path = server
    raw = {
        "data": {"labels": LABELS},
        "labelstudio": yaml.safe_load(params_path.read_text())["labelstudio"],
        "prediction_review": {
            "project_title": "curagate integration predictions",
            "sample_size": 4,
            "sample_file": str(tmp_path / "sample.parquet"),
            "decisions_file": str(tmp_path / "decisions.parquet"),
            "reviewed_file": str(tmp_path / "reviewed.jsonl"),
            "metrics_file": str(tmp_path / "production.json"),
        },
    }
    own_params = tmp_path / "params.yaml"
    own_params.write_text(yaml.safe_dump(raw), encoding="utf-8")
    params = params_from_dict(raw)
    texts = [
        "I lost my card, email me at jane.doe@example.com",
        "top up failed with card 4111 1111 1111 1111",
        "what rate do you use today",
        "my card still has not arrived",
        "rate for yen",
        "card arrived broken",
    ]
    predictions = pl.DataFrame(
        {
            "id": [f"q{i}" for i in range(6)],
            "text": texts,
            "label": [LABELS[1], LABELS[2], LABELS[3], LABELS[0], LABELS[3], LABELS[0]],
            "confidence": [0.9, 0.3, 0.8, 0.2, 0.95, 0.4],
            "model_version": ["v1"] * 6,
            "predicted_at": ["2026-12-02T10:00:00Z"] * 6,
        }
    )
    pushed = push_prediction_sample(predictions, params)
    assert (pushed.sampled, pushed.imported, pushed.skipped) == (4, 4, 0)
    ls = connect(params.labelstudio)
    project_id = find_project(ls, "curagate integration predictions")
    assert project_id == pushed.project_id != find_project(ls, params.labelstudio.project_title)
    tasks = {t["data"]["flag_id"]: t for t in list_tasks(ls, project_id, page_size=100)}
    sample = pl.read_parquet(tmp_path / "sample.parquet")
    assert sorted(tasks) == sorted(sample["id"].to_list())
    sent = json.dumps([t["data"] for t in tasks.values()])
    assert "jane.doe@example.com" not in sent and "4111" not in sent
    for row in sample.iter_rows(named=True):
        task = tasks[row["id"]]
        assert task["data"]["weight"] == pytest.approx(row["weight"])
        assert task["predictions"][0]["result"][0]["value"]["choices"] == [row["label"]]

    # an annotator: the first sampled answer is right, the second wrong (with the right label)
    first, second = sample["id"][0], sample["id"][1]
    wrong_label = next(lab for lab in LABELS if lab != tasks[second]["data"]["model_label"])
    ls.annotations.create(
        id=tasks[first]["id"],
        result=[_choice("verdict", "correct"), _choice("label", tasks[first]["data"]["model_label"])],
    )
    ls.annotations.create(
        id=tasks[second]["id"], result=[_choice("verdict", "wrong"), _choice("label", wrong_label)]
    )

    app = typer.Typer()
    register(app)
    result = CliRunner().invoke(app, ["review", "pull-predictions", "--params", str(own_params)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "production.json").read_text())
    assert (metrics["reviewed"], metrics["correct"]) == (2, 1)
    rows = [json.loads(line) for line in (tmp_path / "reviewed.jsonl").read_text().splitlines()]
    got = {r["id"]: r["label"] for r in rows}
    assert got == {
        f"production-{first}": tasks[first]["data"]["model_label"],
        f"production-{second}": wrong_label,
    }
    assert {r["text"] for r in rows} <= set(texts)  # the original text, not the masked one
    again = pull_prediction_reviews(params)
    assert again.train_rows == 2

    args = ["--predictions", str(_write(predictions, tmp_path)), "--params", str(own_params)]
    result = CliRunner().invoke(app, ["review", "push-predictions", *args])
    assert result.exit_code == 0, result.output
    assert len(list_tasks(ls, project_id, page_size=100)) == 4  # the same sample: nothing new


def test_instruction_review_round_trip(
    server: tuple[ServerState, Path], tmp_path: Path, banking_train: pl.DataFrame, banking_test: pl.DataFrame
) -> None:
    """Instruction data: curate (rows held) -> review push (CLI) -> annotate keep/drop/unsure via
    the API -> review pull (CLI) -> curate --reviews: kept in train, dropped as reviewer_drop,
    unsure still held; a second push imports nothing."""
    from curation.instruction_corrupt import instruction_dataset
    from flows.cli import app

    _, params_path = server
    truth = instruction_dataset(banking_train.head(300), seed=2, defects_per_kind=4, tricky_per_kind=3)
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text(
        "".join(
            json.dumps({"id": r["id"], "prompt": r["prompt"], "response": r["response"]}) + "\n"
            for r in truth.iter_rows(named=True)
        )  # fmt: skip
    )
    test.write_text(
        "".join(
            json.dumps({"prompt": t, "response": "See the Help tab in the app."}) + "\n"
            for t in banking_test["text"].head(40)
        )  # fmt: skip
    )
    raw = {
        "data": {"task": "instruction"},
        "labelstudio": {
            **yaml.safe_load(params_path.read_text())["labelstudio"],
            "instruction_project_title": "curagate integration instructions",
        },
    }
    own_params = tmp_path / "params.yaml"
    own_params.write_text(yaml.safe_dump(raw), encoding="utf-8")
    cfg = params_from_dict(raw).labelstudio
    runner = CliRunner()
    out, again = tmp_path / "out", tmp_path / "again"
    common = ["--train", str(train), "--test", str(test), "--params", str(own_params), "--quiet"]
    result = runner.invoke(app, ["curate", *common, "--out", str(out)])
    assert result.exit_code == 0, result.output
    held = pl.read_parquet(out / "held.parquet")
    assert held.height == 20 and held["response"].null_count() == 0

    result = runner.invoke(app, ["review", "push", "--out", str(out), "--params", str(own_params)])
    assert result.exit_code == 0, result.output
    ls = connect(cfg)
    project_id = find_project(ls, cfg.instruction_project_title)
    assert project_id is not None and project_id != find_project(ls, cfg.project_title)
    config = ls.projects.get(id=project_id).label_config
    assert 'value="relabel"' not in config and 'name="response"' in config
    tasks = {t["data"]["flag_id"]: t for t in list_tasks(ls, project_id, page_size=cfg.page_size)}
    assert set(tasks) == set(held["id"])
    pii_row = held.filter(pl.col("issue") == "pii_in_response").row(0, named=True)
    pii_task = tasks[pii_row["id"]]["data"]
    assert pii_task["response"] != pii_row["response"] and "[" in pii_task["response"]
    assert "@" not in json.dumps([t["data"] for t in tasks.values()])
    assert pii_task["reasons"].startswith("pii_in_response")

    by_issue = {r["issue"]: r["id"] for r in held.sort("id").iter_rows(named=True)}
    keep, drop, unsure = by_issue["markup"], by_issue["truncated_response"], by_issue["short_response"]
    for rid, decision in ((keep, "keep"), (drop, "drop"), (unsure, "unsure")):
        ls.annotations.create(id=tasks[rid]["id"], result=[_choice("decision", decision)])
    reviews = tmp_path / "reviews.parquet"
    result = runner.invoke(
        app, ["review", "pull", "--to", str(reviews), "--out", str(out), "--params", str(own_params)]
    )
    assert result.exit_code == 0, result.output
    got = {r["id"]: r["decision"] for r in Review.validate(pl.read_parquet(reviews)).iter_rows(named=True)}
    assert got == {keep: "keep", drop: "drop", unsure: "unsure"}

    result = runner.invoke(app, ["curate", *common, "--out", str(again), "--reviews", str(reviews)])
    assert result.exit_code == 0, result.output
    curated, removed, held2 = (pl.read_parquet(again / f"{f}.parquet") for f in ("train", "removed", "held"))
    assert keep in curated["id"].to_list() and keep not in held2["id"].to_list()
    assert removed.filter(pl.col("id") == drop).select("stage", "reason").rows() == [
        ("review", "reviewer_drop")
    ]
    assert held2.filter(pl.col("id") == unsure)["status"].to_list() == ["unsure"]
    quality = json.loads((again / "quality.json").read_text())
    assert quality["accounting_ok"] == 1 and quality["reviews_applied"] == 3

    result = runner.invoke(app, ["review", "push", "--out", str(again), "--params", str(own_params)])
    assert result.exit_code == 0, result.output
    assert len(list_tasks(ls, project_id, page_size=cfg.page_size)) == 20  # the same keys: nothing new


def _write(frame: pl.DataFrame, where: Path) -> Path:
    path = where / "predictions.parquet"
    frame.write_parquet(path)
    return path


def test_start_is_reused_and_stop_stops(server: tuple[ServerState, Path]) -> None:
    state, params_path = server
    cfg = params_from_dict(
        {"labelstudio": yaml.safe_load(params_path.read_text())["labelstudio"]}
    ).labelstudio
    data_dir = Path(state.data_dir)
    again = start_server(cfg.server, port=state.port, data_dir=data_dir)
    assert again.pid == state.pid  # already running: recorded server reused
    assert stop_server(data_dir, timeout_s=cfg.server.stop_timeout_s) is True
    assert _http_status(f"{state.url}/health") is None
    assert stop_server(data_dir, timeout_s=cfg.server.stop_timeout_s) is False
