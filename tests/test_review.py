"""Unit tests of the review loop: label config, tasks (PII-masked), reviews, decisions, and the
Label Studio wiring (credentials, an unreachable server) without a real server."""

from __future__ import annotations

import json
import socket
import stat
import types
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
import typer

from curation.review import (
    annotations_to_reviews,
    build_label_config,
    build_tasks,
    pseudonymise_id,
    resolve_decisions,
    restore_flag_ids,
    select_new_flags,
    task_keys,
)
from schemas.params import ParamsError, params_from_dict
from schemas.records import Review
from schemas.review_params import (
    REVIEWS_SCHEMA,
    LabelStudioParams,
    PiiParams,
)

CFG = LabelStudioParams()
LABELS = ["card_arrival", "lost_or_stolen_card", "top_up_failed"]


def test_label_config_is_valid_xml_with_all_labels() -> None:
    labels = [*LABELS, 'a "quoted" & <odd> label']
    root = ET.fromstring(build_label_config(labels, CFG))
    choices = {c.get("name"): c for c in root.iter("Choices")}
    assert set(choices) == {"decision", "label"}
    assert [c.get("value") for c in choices["label"]] == labels
    assert [c.get("value") for c in choices["decision"]] == ["keep", "relabel", "drop", "unsure"]
    assert choices["decision"].get("required") == "true"
    assert choices["label"].get("layout") == "select"
    texts = {t.get("name"): t.get("value") for t in root.iter("Text")}
    assert texts == {
        "text": "$text",
        "given_label": "$given_label",
        "suggested_label": "$suggested_label",
    }


def test_label_config_rejects_bad_label_sets() -> None:
    with pytest.raises(ValueError, match="empty"):
        build_label_config([], CFG)
    with pytest.raises(ValueError, match="duplicates"):
        build_label_config(["a", "a"], CFG)


def _flags() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "id": ["r1", "r2", "r3"],
            "text_hash": ["h1", "h2", "h3"],
            "text": ["card lost, mail me a@b.com", "where is my card", "top up failed"],
            "issue": ["label_issue", "conflicting_duplicate", "label_issue"],
            "score": [0.12, 0.5, 0.3],
            "given_label": ["card_arrival", "card_arrival", "top_up_failed"],
            "suggested_label": ["lost_or_stolen_card", None, "not_a_label"],
            "duplicate_of": [None, "r9", None],
        }
    )


def test_build_tasks_masks_and_prefills_suggestion() -> None:
    tasks, counts = build_tasks(_flags(), LABELS, cfg=CFG)
    assert counts == {"email": 1, "phone": 0, "card": 0, "iban": 0}
    assert len(tasks) == 3
    first = tasks[0]
    assert first["data"]["text"] == "card lost, mail me [EMAIL]"
    assert first["data"]["flag_id"] == "r1" and first["data"]["text_hash"] == "h1"
    assert first["data"]["issue"] == "label_issue" and first["data"]["score"] == 0.12
    (prediction,) = first["predictions"]
    assert prediction["model_version"] == CFG.model_version
    assert prediction["score"] == 0.12
    assert prediction["result"] == [
        {
            "from_name": "label",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": ["lost_or_stolen_card"]},
        }
    ]
    # no suggestion -> no prediction, empty strings for template variables
    assert "predictions" not in tasks[1]
    assert tasks[1]["data"]["suggested_label"] == "" and tasks[1]["data"]["duplicate_of"] == "r9"
    # a suggestion outside the label set is shown but not pre-filled
    assert "predictions" not in tasks[2]


def test_build_tasks_can_prefill_decision() -> None:
    cfg = LabelStudioParams(prefill_decision=True)
    tasks, _ = build_tasks(_flags().head(1), LABELS, cfg=cfg)
    tags = {r["from_name"]: r["value"]["choices"] for r in tasks[0]["predictions"][0]["result"]}
    assert tags == {"label": ["lost_or_stolen_card"], "decision": ["relabel"]}


def test_build_tasks_requires_columns() -> None:
    with pytest.raises(ValueError, match="text_hash"):
        build_tasks(_flags().drop("text_hash"), LABELS, cfg=CFG)


def test_select_new_flags_by_id_and_text_hash() -> None:
    flags = pl.concat([_flags(), _flags().head(1)])  # a repeated row is pushed once
    existing = task_keys([{"data": {"flag_id": "r1", "text_hash": "h1"}}, {"data": {"x": 1}}])
    assert existing == {("r1", "h1")}
    new = select_new_flags(flags, existing)
    assert new["id"].to_list() == ["r2", "r3"]
    # same id, changed text -> a new key, a new task
    changed = _flags().with_columns(pl.lit("h1b").alias("text_hash")).head(1)
    assert select_new_flags(changed, existing).height == 1
    assert select_new_flags(flags, set()).height == 3


def _ann(decision: str | None, label: str | None, when: str, **extra: object) -> dict:
    result = []
    if decision:
        result.append(
            {"from_name": "decision", "to_name": "text", "type": "choices",
             "value": {"choices": [decision]}}
        )  # fmt: skip
    if label:
        result.append(
            {"from_name": "label", "to_name": "text", "type": "choices",
             "value": {"choices": [label]}}
        )  # fmt: skip
    return {
        "result": result,
        "created_username": " ann@example.com, 3",
        "completed_by": 3,
        "was_cancelled": False,
        "created_at": when,
        "updated_at": when,
        **extra,
    }


def _task(task_id: int, flag_id: str, annotations: list[dict]) -> dict:
    data = {"flag_id": flag_id, "text_hash": f"h-{flag_id}", "given_label": "card_arrival"}
    return {"id": task_id, "data": data, "annotations": annotations}


def test_annotations_to_reviews() -> None:
    tasks = [
        _task(1, "a", [_ann("relabel", "lost_or_stolen_card", "2026-01-01T10:00:00Z")]),
        _task(2, "b", [_ann("drop", "top_up_failed", "2026-01-01T11:00:00.5Z")]),
        _task(3, "c", [_ann("keep", None, "2026-01-01T12:00:00+01:00")]),
        _task(4, "d", [_ann("relabel", None, "2026-01-01T12:00:00Z")]),  # no label -> unsure
        _task(5, "e", [_ann("relabel", "card_arrival", "2026-01-01T12:00:00Z")]),  # = given
        _task(6, "f", [_ann(None, "top_up_failed", "2026-01-01T12:00:00Z")]),  # no decision
        _task(7, "g", [_ann("drop", None, "2026-01-01T12:00:00Z", was_cancelled=True)]),
        _task(8, "h", []),
        {"id": 9, "data": {"text": "not ours"}, "annotations": [_ann("drop", None, "2026")]},
    ]
    reviews = annotations_to_reviews(tasks)
    assert reviews.schema == pl.Schema(REVIEWS_SCHEMA)
    Review.validate(reviews)
    got = {r["id"]: (r["decision"], r["label"]) for r in reviews.iter_rows(named=True)}
    assert got == {
        "a": ("relabel", "lost_or_stolen_card"),
        "b": ("drop", None),
        "c": ("keep", None),
        "d": ("unsure", None),
        "e": ("keep", None),
        "f": ("unsure", None),
    }
    row_c = reviews.filter(pl.col("id") == "c").row(0, named=True)
    assert row_c["time"] == datetime(2026, 1, 1, 11, 0, tzinfo=UTC)
    assert row_c["annotator"] == "ann@example.com" and row_c["task_id"] == 3
    assert row_c["text_hash"] == "h-c"
    assert annotations_to_reviews([]).schema == pl.Schema(REVIEWS_SCHEMA)


def _reviews(rows: list[tuple[str, str, str | None, str]]) -> pl.DataFrame:
    return pl.DataFrame(
        [
            {
                "id": i,
                "text_hash": "h",
                "decision": d,
                "label": lab,
                "annotator": "x",
                "time": t,
                "task_id": 1,
            }
            for i, d, lab, t in rows
        ]  # fmt: skip
    )


def test_resolve_decisions_latest_vs_majority() -> None:
    reviews = _reviews(
        [
            ("a", "relabel", "lost_or_stolen_card", "2026-01-01T10:00:00Z"),
            ("a", "relabel", "lost_or_stolen_card", "2026-01-01T11:00:00Z"),
            ("a", "drop", None, "2026-01-01T12:00:00Z"),  # latest, but outvoted
            ("b", "keep", None, "2026-01-02T09:00:00Z"),
        ]
    )
    latest = resolve_decisions(reviews, policy="latest")
    majority = resolve_decisions(reviews, policy="majority")
    assert latest.columns == ["id", "text_hash", "decision", "label", "n_reviews", "disagreement"]
    assert latest.rows() == [
        ("a", "h", "drop", None, 3, True),
        ("b", "h", "keep", None, 1, False),
    ]
    assert majority.rows() == [
        ("a", "h", "relabel", "lost_or_stolen_card", 3, True),
        ("b", "h", "keep", None, 1, False),
    ]


def test_resolve_decisions_majority_tie_goes_to_latest_and_input_order_free() -> None:
    reviews = _reviews(
        [
            ("a", "drop", None, "2026-01-01T12:00:00Z"),
            ("a", "keep", None, "2026-01-01T10:00:00Z"),
            ("a", "relabel", "top_up_failed", "2026-01-01T11:00:00Z"),
            ("a", "keep", None, "2026-01-01T13:00:00Z"),
            ("a", "drop", None, "2026-01-01T09:00:00Z"),
        ]
    )
    # keep and drop tie 2-2; keep's latest vote (13:00) is the most recent
    assert resolve_decisions(reviews, policy="majority")["decision"].to_list() == ["keep"]
    shuffled = reviews.sample(fraction=1.0, shuffle=True, seed=3)
    for policy in ("latest", "majority"):
        assert resolve_decisions(shuffled, policy=policy).equals(resolve_decisions(reviews, policy=policy))


def test_resolve_decisions_keys_on_text_hash_and_checks_input() -> None:
    reviews = _reviews([("a", "drop", None, "2026-01-01T12:00:00Z")])
    changed = reviews.with_columns(text_hash=pl.lit("h2"), decision=pl.lit("keep"))
    out = resolve_decisions(pl.concat([reviews, changed]), policy="latest")
    assert out.select("text_hash", "decision").rows() == [("h", "drop"), ("h2", "keep")]
    empty = resolve_decisions(reviews.clear(), policy="majority")
    assert empty.is_empty() and "disagreement" in empty.columns
    with pytest.raises(ValueError, match="policy"):
        resolve_decisions(reviews, policy="oldest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="decision"):
        resolve_decisions(reviews.drop("decision"), policy="latest")


def test_labelstudio_params_typed_and_strict() -> None:
    cfg = params_from_dict({"labelstudio": {"project_title": "p", "pii": {"kinds": ["email"]}}}).labelstudio
    assert cfg.project_title == "p" and cfg.pii.kinds == ("email",)
    with pytest.raises(ParamsError, match="colour"):
        params_from_dict({"labelstudio": {"colour": "red"}})
    with pytest.raises(ParamsError, match="kinds"):
        params_from_dict({"labelstudio": {"pii": {"kinds": ["ssn"]}}})
    with pytest.raises(ParamsError, match="port"):
        params_from_dict({"labelstudio": {"server": {"port": 0}}})


def test_params_yaml_section_loads() -> None:
    from pathlib import Path

    from schemas.params import load_params

    root = Path(__file__).resolve().parents[1]
    cfg = load_params(root / "params.yaml").labelstudio
    assert cfg.server.venv == ".venv-labelstudio"
    assert set(cfg.pii.kinds) == {"email", "phone", "card", "iban"}


def test_register_adds_sub_apps() -> None:
    from typer.testing import CliRunner

    from flows.review_commands import register

    app = typer.Typer()
    register(app)
    runner = CliRunner()
    for args, words in [
        (["labelstudio", "--help"], ("start", "stop")),
        (["review", "--help"], ("push", "pull")),
        (["review", "push", "--help"], ("--out",)),
    ]:
        result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output
        assert all(w in result.output for w in words)


# --- everything that leaves is masked, once ------------------------------------------------

_SECRETS = ("jane.doe@example.com", "4111 1111 1111 1111", "+44 20 7946 0958", "GB82 WEST 1234 5698 7654 32")


def _pii_flags() -> pl.DataFrame:
    """Flags whose id, duplicate_of and extra columns (raw, detail, meta) all hold PII."""
    return pl.DataFrame(
        {
            "id": ["jane.doe@example.com-1", "r2"],
            "text_hash": ["h1", "h2"],
            "text": ["card 4111 1111 1111 1111 lost", "call +44 20 7946 0958"],
            "issue": ["label_issue", "conflicting_duplicate"],
            "score": [0.2, 0.6],
            "given_label": ["card_arrival", "card_arrival"],
            "suggested_label": ["lost_or_stolen_card", None],
            "duplicate_of": [None, "jane.doe@example.com-1"],
            "raw": ['{"text": "card 4111 1111 1111 1111 lost"}', "GB82 WEST 1234 5698 7654 32"],
            "detail": ["near copy of +44 20 7946 0958", None],
            "meta": ["from jane.doe@example.com", None],
        }
    )


def test_build_tasks_masks_every_field_that_leaves() -> None:
    flags = _pii_flags()
    tasks, counts = build_tasks(flags, LABELS, cfg=CFG)
    sent = json.dumps(tasks)
    leaked = [s for s in _SECRETS if s in sent or s.replace(" ", "") in sent]
    assert leaked == []
    assert "example.com" not in sent  # not even a part of the id
    assert set(tasks[0]["data"]) == {
        "flag_id", "text_hash", "issue", "score", "text", "given_label", "suggested_label", "duplicate_of",
    }  # fmt: skip
    pseudonym = tasks[0]["data"]["flag_id"]
    assert pseudonym == pseudonymise_id("jane.doe@example.com-1", flags["text"][0], cfg=CFG.pii)
    assert pseudonym.startswith("pii-") and tasks[1]["data"]["flag_id"] == "r2"
    assert tasks[1]["data"]["duplicate_of"] == "[EMAIL]-1"
    # text card + text phone, id e-mail + duplicate_of e-mail
    assert counts == {"email": 2, "phone": 1, "card": 1, "iban": 0}


def test_pseudonymous_ids_round_trip_and_are_not_pushed_twice() -> None:
    flags = _pii_flags()
    tasks, _ = build_tasks(flags, LABELS, cfg=CFG)
    for task_id, task in enumerate(tasks, start=1):
        task["id"] = task_id
        task["annotations"] = [_ann("keep", None, "2026-01-01T10:00:00Z")]
    reviews = annotations_to_reviews(tasks)
    assert reviews["id"].str.starts_with("pii-").sum() == 1
    restored = restore_flag_ids(reviews, flags, cfg=CFG.pii)
    assert sorted(restored["id"].to_list()) == ["jane.doe@example.com-1", "r2"]
    assert restored.drop("id").equals(reviews.drop("id"))
    existing = task_keys(tasks)
    assert select_new_flags(flags, existing, pii=CFG.pii).is_empty()
    # without the PII options, the pseudonymised flag looks new
    assert select_new_flags(flags, existing)["id"].to_list() == ["jane.doe@example.com-1"]


class _FakeLS:
    """The few SDK calls push and pull make, recorded; ``fail`` is raised by every call."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.imported: list[dict] = []
        self.projects = self
        self.tasks = types.SimpleNamespace(list=self._tasks)

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    def list(self, title: str) -> list:  # projects.list
        self._check()
        return [types.SimpleNamespace(id=7, title=title)] if self.imported else []

    def create(self, **kwargs: object) -> types.SimpleNamespace:
        self._check()
        return types.SimpleNamespace(id=7)

    def get(self, id: int) -> types.SimpleNamespace:  # noqa: A002 (the SDK's name)
        return types.SimpleNamespace(label_config="")

    def import_tasks(self, id: int, request: list[dict]) -> None:  # noqa: A002
        self.imported.extend(request)

    def _tasks(self, **kwargs: object) -> list[dict]:
        self._check()
        return [{"id": i, **t} for i, t in enumerate(self.imported, start=1)]


def _write_out(tmp_path: Path, flags: pl.DataFrame) -> Path:
    flags.write_parquet(tmp_path / "flags.parquet")
    (tmp_path / "labels.json").write_text(json.dumps(LABELS), encoding="utf-8")
    return tmp_path


def test_push_masks_once_and_reports_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import curation.review as review
    from flows.labelstudio import push_flags

    calls: list[str] = []
    real = review.mask_pii

    def counting(texts: pl.Series, *, cfg: PiiParams) -> tuple[pl.Series, dict[str, int]]:
        calls.append(texts.name)
        return real(texts, cfg=cfg)

    monkeypatch.setattr(review, "mask_pii", counting)
    out = _write_out(tmp_path, _pii_flags())
    ls = _FakeLS()
    report = push_flags(ls, out, CFG)
    assert calls.count("text") == 1
    assert report.imported == 2 and report.pii_masked == {"email": 2, "phone": 1, "card": 1, "iban": 0}
    assert "4111" not in json.dumps(ls.imported)
    again = push_flags(ls, out, CFG)  # the pseudonymised flag is recognised, nothing re-imported
    assert again.imported == 0 and again.skipped == 2


def test_push_and_pull_turn_transport_errors_into_labelstudio_errors(tmp_path: Path) -> None:
    import httpx

    from flows.labelstudio import LabelStudioError, pull_reviews, push_flags

    out = _write_out(tmp_path, _flags())
    ls = _FakeLS(fail=httpx.ConnectError("connection refused"))
    with pytest.raises(LabelStudioError, match="curagate labelstudio start"):
        push_flags(ls, out, CFG)
    with pytest.raises(LabelStudioError, match="cannot reach"):
        pull_reviews(ls, tmp_path / "reviews.parquet", CFG)


def test_pull_maps_pseudonyms_back_with_the_flags_dir(tmp_path: Path) -> None:
    from flows.labelstudio import pull_reviews, push_flags

    out = _write_out(tmp_path, _pii_flags())
    ls = _FakeLS()
    push_flags(ls, out, CFG)
    for task in ls.imported:
        task["annotations"] = [_ann("drop", None, "2026-01-02T10:00:00Z")]
    pull_reviews(ls, tmp_path / "with.parquet", CFG, flags_dir=out)
    pull_reviews(ls, tmp_path / "without.parquet", CFG)
    ids_with = sorted(pl.read_parquet(tmp_path / "with.parquet")["id"].to_list())
    ids_without = pl.read_parquet(tmp_path / "without.parquet")["id"].to_list()
    assert ids_with == ["jane.doe@example.com-1", "r2"]
    assert sum(i.startswith("pii-") for i in ids_without) == 1


# --- credentials and an unreachable server --------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_credentials_generated_with_mode_600(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.labelstudio import load_credentials

    monkeypatch.delenv("LABEL_STUDIO_PASSWORD", raising=False)
    monkeypatch.delenv("LABEL_STUDIO_USER_TOKEN", raising=False)
    creds = load_credentials(tmp_path)
    path = tmp_path / "credentials.json"
    assert _mode(path) == 0o600
    assert json.loads(path.read_text()) == creds and len(creds["token"]) == 40
    assert load_credentials(tmp_path) == creds  # generated once
    path.chmod(0o644)  # an existing, too-open file is tightened
    assert load_credentials(tmp_path) == creds
    assert _mode(path) == 0o600


def test_env_secrets_never_reach_the_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.labelstudio import load_credentials

    monkeypatch.setenv("LABEL_STUDIO_PASSWORD", "env-password")
    monkeypatch.setenv("LABEL_STUDIO_USER_TOKEN", "env-token")
    assert load_credentials(tmp_path) == {"password": "env-password", "token": "env-token"}
    assert not (tmp_path / "credentials.json").exists()
    # only the token from env: the password is generated and stored, the token is not
    monkeypatch.delenv("LABEL_STUDIO_PASSWORD")
    creds = load_credentials(tmp_path)
    stored = json.loads((tmp_path / "credentials.json").read_text())
    assert creds["token"] == "env-token" and set(stored) == {"password"}
    assert stored["password"] == creds["password"]
    # a copy of an env secret left by an older version is removed; mode tightened
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"password": creds["password"], "token": "env-token"}))
    path.chmod(0o644)
    load_credentials(tmp_path)
    assert "env-token" not in path.read_text() and _mode(path) == 0o600


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_review_commands_with_unreachable_url_fail_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from flows.review_commands import register

    url = f"http://127.0.0.1:{_closed_port()}"
    monkeypatch.setenv("LABEL_STUDIO_URL", url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "k")
    out = _write_out(tmp_path, _flags())
    params = Path(__file__).resolve().parents[1] / "params.yaml"
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    for args in (
        ["review", "push", "--out", str(out), "--params", str(params)],
        ["review", "pull", "--to", str(tmp_path / "r.parquet"), "--params", str(params)],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, SystemExit)  # typer.Exit, not a traceback
        text = " ".join(result.output.split())
        assert url in text and "curagate labelstudio start" in text
        assert "Traceback" not in result.output
