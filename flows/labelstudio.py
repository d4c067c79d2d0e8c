"""Label Studio I/O: the local server process, and the SDK calls of push and pull.

Only wiring lives here; what goes into a task and what comes out of an annotation is decided
by curation/review.py. label-studio 1.23 pins redis<5.3, pytz<2023 and python-json-logger
2.0.4, which clash with prefect 3.8 (pydocket needs redis>=6), so the server runs from its own
virtualenv (``labelstudio.server.venv``), created on first ``start``.

Secrets: the password and API token come from LABEL_STUDIO_PASSWORD / LABEL_STUDIO_USER_TOKEN
when set (and are then never written to disk), else they are generated once and kept in
``<data_dir>/credentials.json`` (mode 0600, enforced on every load; outside git). They are never
logged and never put on a command line.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from curation.review import (
    PSEUDONYM_PREFIX,
    annotations_to_reviews,
    build_label_config,
    build_tasks,
    restore_flag_ids,
    select_new_flags,
    task_keys,
)
from schemas.params import Params
from schemas.records import Review
from schemas.review_params import REVIEWS_SCHEMA, LabelStudioParams, ServerParams

log = logging.getLogger(__name__)

STATE_FILE = "curagate-server.json"
CREDENTIALS_FILE = "credentials.json"
LOG_FILE = "label-studio.log"
VENV_MARKER = ".curagate-installed"
TOKEN_BYTES = 20  # 40 hex characters, like Label Studio's own tokens
HTTP_TIMEOUT_S = 5.0
CREDENTIALS_MODE = 0o600  # owner read/write only
# where each secret comes from when set; otherwise it is generated into credentials.json
CREDENTIAL_ENV = {"password": "LABEL_STUDIO_PASSWORD", "token": "LABEL_STUDIO_USER_TOKEN"}
START_HINT = "start one with `curagate labelstudio start` (or set LABEL_STUDIO_URL to a running server)"


class LabelStudioError(RuntimeError):
    """The server could not be started, reached or authenticated against; says why."""


@dataclass(frozen=True)
class ServerState:
    """What `start` records so that `stop` and the client can find the server again."""

    pid: int
    url: str
    port: int
    data_dir: str
    started_s: float


@dataclass(frozen=True)
class PushReport:
    """Outcome of a push: how many flags were new, skipped, and what PII was masked."""

    project_id: int
    flags: int
    existing_tasks: int
    imported: int
    skipped: int
    pii_masked: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PullReport:
    """Outcome of a pull."""

    project_id: int
    tasks: int
    reviews: int
    path: str


# --- server process ------------------------------------------------------------------------


def ensure_venv(venv: Path, package: str) -> Path:
    """Create ``venv`` with ``package`` installed unless it already is; return label-studio's path.

    Raises:
        LabelStudioError: venv creation or pip install failed (pip's output is in the message).
    """
    exe = venv / "bin" / "label-studio"
    marker = venv / VENV_MARKER
    if exe.exists() and marker.exists() and marker.read_text(encoding="utf-8") == package:
        return exe
    log.info("installing %s into %s (first use; takes a few minutes)", package, venv)
    steps = []
    if not (venv / "bin" / "python").exists():
        steps.append([sys.executable, "-m", "venv", str(venv)])
    steps.append([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", package])
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise LabelStudioError(f"{' '.join(cmd[:4])}... failed:\n{done.stderr[-4000:]}")
    if not exe.exists():
        raise LabelStudioError(f"{package} installed but {exe} is missing")
    marker.write_text(package, encoding="utf-8")
    return exe


def load_credentials(data_dir: Path) -> dict[str, str]:
    """Password and token: from the environment if set, else generated once into data_dir.

    Only generated secrets are written, to ``<data_dir>/credentials.json`` with mode 0600; a
    secret taken from LABEL_STUDIO_PASSWORD / LABEL_STUDIO_USER_TOKEN never reaches the disk.
    The file's mode is forced to 0600 even when it already exists (and nothing changes).

    Raises:
        LabelStudioError: the file exists but is not a JSON object (names the file).
    """
    path = data_dir / CREDENTIALS_FILE
    stored: dict[str, str] = {}
    if path.exists():
        os.chmod(path, CREDENTIALS_MODE)
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise LabelStudioError(f"{path}: not valid JSON ({exc}); delete it to regenerate") from exc
        if not isinstance(stored, dict):
            raise LabelStudioError(f"{path}: expected a JSON object; delete it to regenerate")
    env = {key: os.environ.get(var) for key, var in CREDENTIAL_ENV.items()}
    generate = {
        "password": lambda: secrets.token_urlsafe(TOKEN_BYTES),
        "token": lambda: secrets.token_hex(TOKEN_BYTES),
    }
    creds = {key: env[key] or stored.get(key) or generate[key]() for key in CREDENTIAL_ENV}
    # the file holds generated secrets only: none given by the environment (an older version
    # copied them there, those copies are removed), other keys left as they were
    wanted = {k: v for k, v in stored.items() if k not in CREDENTIAL_ENV or v != env.get(k)}
    wanted.update({key: creds[key] for key in CREDENTIAL_ENV if not env[key]})
    if wanted != stored:
        if not wanted:
            path.unlink()
        else:
            data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, CREDENTIALS_MODE)
            os.fchmod(fd, CREDENTIALS_MODE)  # O_CREAT's mode applies to a new file only
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(wanted, fh)
    return creds


def _http_status(url: str, token: str | None = None) -> int | None:
    req = urllib.request.Request(url)
    if token:
        req.add_header("Authorization", f"Token {token}")
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:  # noqa: S310 (local URL)
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child (we started it and it died) still answers kill 0
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return done == 0


def read_state(data_dir: Path) -> ServerState | None:
    """The recorded server of ``data_dir``, or None."""
    path = data_dir / STATE_FILE
    if not path.exists():
        return None
    return ServerState(**json.loads(path.read_text(encoding="utf-8")))


def _enable_legacy_tokens(venv: Path, env: dict[str, str]) -> None:
    """Turn on legacy API tokens for every organisation (1.23 disables them by default)."""
    python = str(venv / "bin" / "python")
    where = subprocess.run(
        [python, "-c", "import label_studio, os; print(os.path.dirname(label_studio.__file__))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    code = (
        "from organizations.models import Organization\n"
        "for org in Organization.objects.all():\n"
        "    org.jwt.legacy_api_tokens_enabled = True\n"
        "    org.jwt.save()\n"
    )
    env = {**env, "DJANGO_SETTINGS_MODULE": "label_studio.core.settings.label_studio"}
    done = subprocess.run(
        [python, f"{where}/manage.py", "shell", "-c", code],
        capture_output=True,
        text=True,
        env=env,
        cwd=where,
        check=False,
    )
    if done.returncode != 0:
        raise LabelStudioError(f"enabling legacy API tokens failed:\n{done.stderr[-4000:]}")


def start_server(cfg: ServerParams, *, port: int | None = None, data_dir: Path | None = None) -> ServerState:
    """Start Label Studio headless (or reuse the one already recorded) and wait for /health.

    Args:
        cfg: ``labelstudio.server`` (venv, package, host, timeouts, username).
        port: Overrides ``cfg.port``.
        data_dir: Overrides ``cfg.data_dir``; holds the database, log, credentials, pid.

    Raises:
        LabelStudioError: install failed, the server died or stayed unhealthy, or the token
            is refused.
    """
    data_dir = Path(data_dir or cfg.data_dir).resolve()
    port = port or cfg.port
    url = f"http://{cfg.host}:{port}"
    creds = load_credentials(data_dir)
    known = read_state(data_dir)
    if known and _pid_alive(known.pid) and _http_status(f"{known.url}/health") == 200:
        log.info("Label Studio already running at %s (pid %d)", known.url, known.pid)
        return known
    if _http_status(f"{url}/health") is not None:
        raise LabelStudioError(f"port {port} is already in use by another server")
    venv = Path(cfg.venv).resolve()
    exe = ensure_venv(venv, cfg.package)
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "LABEL_STUDIO_USERNAME": cfg.username,
        "LABEL_STUDIO_PASSWORD": creds["password"],
        "LABEL_STUDIO_USER_TOKEN": creds["token"],
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    cmd = [
        str(exe), "start", "--no-browser", "--port", str(port),
        "--internal-host", cfg.host, "--enable-legacy-api-token",
    ]  # fmt: skip
    t0 = time.monotonic()
    with open(data_dir / LOG_FILE, "ab") as logfh:
        proc = subprocess.Popen(cmd, env=env, stdout=logfh, stderr=subprocess.STDOUT, start_new_session=True)
    state = ServerState(proc.pid, url, port, str(data_dir), time.time())
    (data_dir / STATE_FILE).write_text(json.dumps(asdict(state)), encoding="utf-8")
    while _http_status(f"{url}/health") != 200:
        if proc.poll() is not None:
            raise LabelStudioError(f"Label Studio exited ({proc.returncode}); see {logfh.name}")
        if time.monotonic() - t0 > cfg.start_timeout_s:
            stop_server(data_dir, timeout_s=cfg.stop_timeout_s)
            raise LabelStudioError(f"not healthy after {cfg.start_timeout_s}s; see {logfh.name}")
        time.sleep(cfg.poll_interval_s)
    if _http_status(f"{url}/api/current-user/whoami", creds["token"]) == 401:
        log.info("legacy API tokens disabled for this organisation; enabling them")
        _enable_legacy_tokens(venv, env)
        if _http_status(f"{url}/api/current-user/whoami", creds["token"]) != 200:
            raise LabelStudioError("API token refused after enabling legacy tokens")
    log.info("Label Studio healthy at %s after %.1fs", url, time.monotonic() - t0)
    return state


def stop_server(data_dir: Path, *, timeout_s: float) -> bool:
    """Stop the server recorded in ``data_dir`` (its whole process group). False if none ran."""
    data_dir = Path(data_dir).resolve()
    state = read_state(data_dir)
    if state is None:
        return False
    (data_dir / STATE_FILE).unlink()
    if not _pid_alive(state.pid):
        return False
    os.killpg(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _pid_alive(state.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _pid_alive(state.pid):
        os.killpg(state.pid, signal.SIGKILL)
    return True


# --- client --------------------------------------------------------------------------------


def connect(cfg: LabelStudioParams) -> Any:
    """SDK client from LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY, else the recorded local server.

    The key falls back to LABEL_STUDIO_USER_TOKEN, then to the generated credentials file. The
    server must answer ``/health`` before a client is returned, so an unreachable URL fails
    here with a message rather than deep inside an SDK call.

    Raises:
        LabelStudioError: no URL or key can be found, or nothing answers at the URL.
    """
    from label_studio_sdk import LabelStudio

    url = os.environ.get("LABEL_STUDIO_URL")
    key = os.environ.get("LABEL_STUDIO_API_KEY") or os.environ.get(CREDENTIAL_ENV["token"])
    data_dir = Path(cfg.server.data_dir).resolve()
    if not url:
        state = read_state(data_dir)
        if state is None:
            raise LabelStudioError(f"no Label Studio server known: set LABEL_STUDIO_URL, or {START_HINT}")
        url = state.url
    url = url.rstrip("/")
    if not key:
        path = data_dir / CREDENTIALS_FILE
        stored = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        if not isinstance(stored, dict) or not stored.get("token"):
            raise LabelStudioError(f"set LABEL_STUDIO_API_KEY (no token in {path})")
        key = stored["token"]
    if _http_status(f"{url}/health") is None:
        raise LabelStudioError(f"cannot reach Label Studio at {url}: {START_HINT}")
    return LabelStudio(base_url=url, api_key=key)


@contextmanager
def _sdk_errors(ls: Any) -> Iterator[None]:
    """Turn the SDK's transport and auth failures into a LabelStudioError naming the URL."""
    import httpx
    from label_studio_sdk.core.api_error import ApiError

    try:
        url = ls._client_wrapper.get_base_url()
    except AttributeError:  # a test double
        url = "the configured URL"
    try:
        yield
    except httpx.TransportError as exc:
        raise LabelStudioError(f"cannot reach Label Studio at {url} ({exc}): {START_HINT}") from exc
    except ApiError as exc:
        if exc.status_code in (401, 403):
            raise LabelStudioError(f"Label Studio at {url} refused the API key ({exc.status_code})") from exc
        raise LabelStudioError(f"Label Studio at {url} answered {exc.status_code}: {exc.body}") from exc


def find_project(ls: Any, title: str) -> int | None:
    """Id of the (oldest) project titled ``title``, or None."""
    ids = [p.id for p in ls.projects.list(title=title) if p.title == title]
    return min(ids) if ids else None


def _ensure_titled_project(ls: Any, title: str, config: str, **create: Any) -> int:
    """Reuse the project titled ``title`` or create it with ``config`` (and ``create``'s fields)."""
    project_id = find_project(ls, title)
    if project_id is None:
        project = ls.projects.create(title=title, label_config=config, **create)
        log.info("created Label Studio project %d %r", project.id, title)
        return int(project.id)
    if ls.projects.get(id=project_id).label_config != config:
        log.warning("project %d keeps its existing labelling config (it differs)", project_id)
    return project_id


def ensure_project(ls: Any, cfg: LabelStudioParams, labels: list[str]) -> int:
    """Reuse the project titled ``cfg.project_title`` or create it with the review interface."""
    return _ensure_titled_project(
        ls,
        cfg.project_title,
        build_label_config(labels, cfg),
        description=cfg.description,
        model_version=cfg.model_version,
        show_collab_predictions=True,
    )


def list_tasks(ls: Any, project_id: int, *, page_size: int, fields: str = "all") -> list[dict[str, Any]]:
    """All tasks of a project as plain dicts; ``fields="all"`` includes annotations and
    predictions, ``"task_only"`` (enough to read task data) is faster."""
    pager = ls.tasks.list(project=project_id, fields=fields, page_size=page_size)
    return [t.model_dump(mode="json") if hasattr(t, "model_dump") else dict(t) for t in pager]


def read_flags(out_dir: Path) -> tuple[pl.DataFrame, list[str]]:
    """flags.parquet and labels.json of a curate output dir; labels ``[]``: instruction/chat data.

    Raises:
        FileNotFoundError: either file is missing (names it).
        ValueError: labels.json is not a JSON list (names the file).
    """
    out_dir = Path(out_dir)
    for name in ("flags.parquet", "labels.json"):
        if not (out_dir / name).exists():
            raise FileNotFoundError(f"{out_dir / name}: not found (run curate first)")
    flags = _read_parquet(out_dir / "flags.parquet")
    try:
        labels = json.loads((out_dir / "labels.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{out_dir / 'labels.json'}: not valid JSON ({exc}); re-run curate") from exc
    if not isinstance(labels, list):
        raise ValueError(f"{out_dir / 'labels.json'}: must be a JSON list (the label set)")
    return flags, [str(x) for x in labels]


def read_instruction_queue(out_dir: Path, flags: pl.DataFrame) -> pl.DataFrame:
    """The instruction/chat flags of ``out_dir`` with their responses and reasons (held.parquet).

    Raises:
        FileNotFoundError: held.parquet is missing (names it).
        ValueError: held.parquet lacks the responses (written by an older curagate: re-run curate).
    """
    from curation.review import instruction_review_queue

    path = Path(out_dir) / "held.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path}: not found (run curate first)")
    held = _read_parquet(path)
    try:
        return instruction_review_queue(flags, held)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _read_parquet(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except Exception as exc:  # polars raises several types for a corrupt file
        raise ValueError(f"{path}: unreadable Parquet ({exc}); re-run curate") from exc


def review_kind(out_dir: Path | None) -> str:
    """``instruction`` when ``out_dir``'s labels.json is ``[]`` (instruction/chat data), else ``label``."""
    if out_dir is None:
        return "label"
    _, labels = read_flags(out_dir)
    return "instruction" if not labels else "label"


def project_title(cfg: LabelStudioParams, kind: str) -> str:
    """The Label Studio project of a review kind (``label`` or ``instruction``)."""
    return cfg.instruction_project_title if kind == "instruction" else cfg.project_title


def ensure_instruction_project(ls: Any, cfg: LabelStudioParams) -> int:
    """Reuse the project titled ``cfg.instruction_project_title`` or create it (keep/drop/unsure)."""
    from curation.review import build_instruction_label_config

    return _ensure_titled_project(
        ls,
        cfg.instruction_project_title,
        build_instruction_label_config(cfg),
        description=cfg.instruction_description,
    )


def push_flags(ls: Any, out_dir: Path, cfg: LabelStudioParams) -> PushReport:
    """Import flags that have no task yet (keyed by id + text_hash); existing tasks untouched.

    Classification flags go to ``cfg.project_title`` (decision and label); instruction/chat
    flags (labels.json is ``[]``) to ``cfg.instruction_project_title``, with their response and
    the checks' reasons from held.parquet (keep / drop / unsure).

    Raises:
        LabelStudioError: the server cannot be reached or refuses the key (names the URL).
        FileNotFoundError, ValueError: a curate output is missing or unreadable (names it).
    """
    from curation.review import build_instruction_tasks

    flags, labels = read_flags(out_dir)
    queue = read_instruction_queue(out_dir, flags) if not labels else None
    with _sdk_errors(ls):
        if queue is None:
            project_id = ensure_project(ls, cfg, labels)
        else:
            project_id = ensure_instruction_project(ls, cfg)
        existing = task_keys(list_tasks(ls, project_id, page_size=cfg.page_size, fields="task_only"))
        if queue is None:
            new = select_new_flags(flags, existing, pii=cfg.pii)
            tasks, pii = build_tasks(new, labels, cfg=cfg)  # masks once, counts what it masked
        else:
            new = select_new_flags(queue, existing, pii=cfg.pii)
            tasks, pii = build_instruction_tasks(new, cfg=cfg)
        for start in range(0, len(tasks), cfg.import_batch):
            ls.projects.import_tasks(id=project_id, request=tasks[start : start + cfg.import_batch])
    report = PushReport(
        project_id=project_id,
        flags=flags.height,
        existing_tasks=len(existing),
        imported=len(tasks),
        skipped=flags.height - len(tasks),
        pii_masked=pii,
    )
    log.info("push: %s", report)
    return report


def pull_reviews(
    ls: Any, to: Path, cfg: LabelStudioParams, *, flags_dir: Path | None = None, kind: str = "auto"
) -> PullReport:
    """Export completed annotations of the review project into ``to`` (reviews.parquet).

    Args:
        ls: SDK client (see :func:`connect`).
        to: reviews.parquet to write.
        cfg: The ``labelstudio`` section.
        flags_dir: The curate output dir that was pushed; maps the pseudonyms of row ids that
            hold PII back to the ids (without it those reviews keep the pseudonym and their rows
            stay pending), and tells which project to read (``kind="auto"``).
        kind: ``label`` (``cfg.project_title``), ``instruction``
            (``cfg.instruction_project_title``) or ``auto``: instruction when ``flags_dir``'s
            labels.json is ``[]``, else label.

    Raises:
        LabelStudioError: the project does not exist (nothing was pushed yet), or the server
            cannot be reached.
    """
    if kind == "auto":
        kind = review_kind(flags_dir)
    if kind not in ("label", "instruction"):
        raise ValueError(f"kind={kind!r} must be auto, label or instruction")
    title = project_title(cfg, kind)
    with _sdk_errors(ls):
        project_id = find_project(ls, title)
        if project_id is None:
            hint = "" if flags_dir is not None else " (for instruction/chat flags pass the curate --out dir)"
            raise LabelStudioError(f"no project titled {title!r}; push first{hint}")
        tasks = list_tasks(ls, project_id, page_size=cfg.page_size)
    reviews = annotations_to_reviews(tasks)
    if flags_dir is not None:
        flags, _ = read_flags(flags_dir)
        reviews = restore_flag_ids(reviews, flags, cfg=cfg.pii)
    pseudonymous = int(reviews["id"].str.starts_with(PSEUDONYM_PREFIX).sum())
    if pseudonymous:
        log.warning("%d review(s) keep a pseudonymous id (pass the flags dir to map them back)", pseudonymous)
    reviews = Review.validate(reviews.cast(REVIEWS_SCHEMA))  # type: ignore[arg-type]
    to = Path(to)
    to.parent.mkdir(parents=True, exist_ok=True)
    reviews.write_parquet(to)
    report = PullReport(project_id, len(tasks), reviews.height, str(to))
    log.info("pull: %s", report)
    return report


# --- prediction review: people check the model's answers -----------------------------------


@dataclass(frozen=True)
class PredictionPushReport:
    """Outcome of push-predictions: the sample drawn, and how much of it was new."""

    project_id: int
    predictions: int
    sampled: int
    imported: int
    skipped: int
    strata: int
    sample_id: str
    sample_file: str
    pii_masked: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class PredictionPullReport:
    """Outcome of pull-predictions: verdicts, the accuracy estimate, the new train rows."""

    project_id: int
    tasks: int
    reviewed: int  # rows with a resolved verdict (correct, wrong or unsure)
    unsure: int
    train_rows: int  # rows written to the reviewed file (the next curate's extra train input)
    without_text: int  # reviewed rows whose text is not in the local sample file (no train row)
    model_version: str | None  # the version the estimate is for (the latest reviewed)
    estimate: dict[str, Any]
    decisions_file: str
    reviewed_file: str
    metrics_file: str


def read_predictions(path: Path) -> pl.DataFrame:
    """predictions.parquet (schemas/predictions.py), checked.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable, or a column of PREDICTIONS_SCHEMA missing or of the wrong type
            (the message names the file and the column).
    """
    from schemas.predictions import PREDICTIONS_SCHEMA

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; pass the predictions .parquet file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: predictions file not found (run `curagate predict` first)")
    try:
        frame = pl.read_parquet(path)
    except Exception as exc:  # polars raises several types for a corrupt file
        raise ValueError(f"{path}: unreadable predictions Parquet ({exc})") from exc
    for name, dtype in PREDICTIONS_SCHEMA.items():
        if name not in frame.columns:
            raise ValueError(f"{path}: column {name!r} missing (predictions need {list(PREDICTIONS_SCHEMA)})")
        if frame.schema[name] != dtype and not (dtype == pl.Float64 and frame.schema[name].is_numeric()):
            raise ValueError(f"{path}: column {name!r} is {frame.schema[name]}, expected {dtype}")
    return frame


def prediction_labels(params: Params, predictions: pl.DataFrame) -> list[str]:
    """The label choices: ``data.labels``, else the curated labels.json, else the answers seen."""
    from schemas.params import DEFAULT_CURATED_DIR, load_label_set

    labels = load_label_set(params.data.labels, params.base_dir)
    if labels is not None:
        return labels
    curated = Path(DEFAULT_CURATED_DIR) / "labels.json"
    if curated.is_file():
        return [str(x) for x in json.loads(curated.read_text(encoding="utf-8"))]
    return sorted(predictions["label"].drop_nulls().unique().to_list())


def _write_parquet_atomic(frame: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    frame.write_parquet(tmp, statistics=False)
    os.replace(tmp, path)


def _write_text_atomic(text: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def ensure_prediction_project(ls: Any, params: Params, labels: list[str]) -> int:
    """Reuse the project titled ``prediction_review.project_title`` or create it."""
    from curation.review import build_prediction_label_config

    review, cfg = params.prediction_review, params.labelstudio
    return _ensure_titled_project(
        ls,
        review.project_title,
        build_prediction_label_config(labels, cfg),
        description=review.description,
        model_version=review.model_version,
        show_collab_predictions=True,
    )


def push_prediction_sample(
    predictions: pl.DataFrame, params: Params, *, ls: Any = None
) -> PredictionPushReport:
    """Draw the review sample of ``predictions`` and import the rows that have no task yet.

    The sample (with strata and weights) is added to ``prediction_review.sample_file`` first,
    then imported (PII masked, the model's label pre-filled); rows already in the project
    (same prediction id and text hash) are skipped, so a re-push imports nothing new. The
    `monitor` flow calls this; `curagate review push-predictions` too.

    Raises:
        LabelStudioError: the server cannot be reached or refuses the key.
        ValueError: a required predictions column is missing.
    """
    from curation.production import SAMPLE_SCHEMA, sample_predictions
    from curation.review import build_prediction_tasks

    review = params.prediction_review
    ls = ls if ls is not None else connect(params.labelstudio)  # an unreachable server: fail before writing
    sample = sample_predictions(
        predictions,
        size=review.sample_size,
        low_confidence=review.low_confidence,
        oversample=review.low_confidence_oversample,
        minimum=review.min_per_stratum,
        seed=review.seed,
    )
    sample_file = Path(review.sample_file)
    kept = [pl.read_parquet(sample_file).cast(SAMPLE_SCHEMA)] if sample_file.is_file() else []  # type: ignore[arg-type]
    merged = pl.concat([*kept, sample]).unique(
        ["sample_id", "id", "text_hash"], keep="first", maintain_order=True
    )
    _write_parquet_atomic(merged.sort("sample_id", "stratum", "id", "text_hash"), sample_file)
    labels = prediction_labels(params, predictions)
    cfg = params.labelstudio
    with _sdk_errors(ls):
        project_id = ensure_prediction_project(ls, params, labels)
        existing = task_keys(list_tasks(ls, project_id, page_size=cfg.page_size, fields="task_only"))
        new = select_new_flags(sample, existing, pii=cfg.pii)
        tasks, pii = build_prediction_tasks(new, labels, cfg=cfg, model_version=review.model_version)
        for start in range(0, len(tasks), cfg.import_batch):
            ls.projects.import_tasks(id=project_id, request=tasks[start : start + cfg.import_batch])
    report = PredictionPushReport(
        project_id=project_id,
        predictions=predictions.height,
        sampled=sample.height,
        imported=len(tasks),
        skipped=sample.height - len(tasks),
        strata=sample["stratum"].n_unique(),
        sample_id=sample["sample_id"][0] if sample.height else "",
        sample_file=str(sample_file),
        pii_masked=pii,
    )
    log.info("push-predictions: %s", report)
    return report


def pull_prediction_reviews(params: Params, *, ls: Any = None) -> PredictionPullReport:
    """Bring back the verdicts; write the decisions, the new train rows and the accuracy estimate.

    Writes ``prediction_review.decisions_file`` (one resolved verdict per reviewed row, with
    its stratum and weight), ``reviewed_file`` (JSON Lines in the train files' columns, for
    ``data.extra_train``) and ``metrics_file`` (flat JSON: the weighted accuracy of the latest
    reviewed model version with its bootstrap interval). The whole project is read every time,
    so the files are the same whenever the reviews are. The `monitor` flow calls this;
    `curagate review pull-predictions` too.

    Raises:
        LabelStudioError: no prediction-review project (push first), or the server cannot be
            reached.
    """
    from curation.production import SAMPLE_SCHEMA, estimate_accuracy, reviewed_train_rows
    from curation.review import annotations_to_verdicts, resolve_decisions

    review, cfg = params.prediction_review, params.labelstudio
    if params.data.task not in ("classification", "auto"):  # auto: the predictions are labels
        raise ValueError("prediction review needs data.task: classification")
    ls = ls if ls is not None else connect(cfg)
    with _sdk_errors(ls):
        project_id = find_project(ls, review.project_title)
        if project_id is None:
            raise LabelStudioError(f"no project titled {review.project_title!r}; push-predictions first")
        tasks = list_tasks(ls, project_id, page_size=cfg.page_size)
    verdicts = annotations_to_verdicts(tasks)
    sample_file = Path(review.sample_file)
    sample = (
        pl.read_parquet(sample_file).cast(SAMPLE_SCHEMA)  # type: ignore[arg-type]
        if sample_file.is_file()
        else pl.DataFrame(schema=SAMPLE_SCHEMA)
    )
    verdicts = restore_flag_ids(verdicts, sample, cfg=cfg.pii)
    keys = ["id", "text_hash"]
    resolved = resolve_decisions(verdicts, policy=params.review.conflict_policy)
    task_info = verdicts.group_by(keys).agg(
        pl.col("time").max().alias("reviewed_at"),
        *(
            pl.col(c).first()
            for c in verdicts.columns
            if c not in (*keys, "decision", "label", "annotator", "time")
        ),
    )
    texts = sample.select(*keys, "text").unique(keys, keep="first")
    decisions = (
        resolved.rename({"decision": "verdict", "label": "right_label"})
        .join(task_info, on=keys, how="left")
        .join(texts, on=keys, how="left")
        .with_columns(correct=pl.col("verdict") == "correct")
        .sort(keys)
    )
    judged = decisions.filter(pl.col("verdict").is_in(["correct", "wrong"]))
    latest = None
    if judged.height:
        latest = judged.sort("predicted_at", "model_version", nulls_last=False)["model_version"][-1]
        judged = judged.filter(pl.col("model_version").eq_missing(latest))
    estimate = estimate_accuracy(
        judged, bootstrap_samples=review.bootstrap_samples, confidence=review.confidence, seed=review.seed
    )
    rows = reviewed_train_rows(decisions, columns=params.data.columns)
    _write_parquet_atomic(decisions.drop("text"), Path(review.decisions_file))
    _write_text_atomic("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows.iter_rows(named=True)),
                       Path(review.reviewed_file))  # fmt: skip
    metrics = estimate.as_metrics()
    _write_text_atomic(json.dumps(metrics, indent=2, sort_keys=True) + "\n", Path(review.metrics_file))
    report = PredictionPullReport(
        project_id=project_id,
        tasks=len(tasks),
        reviewed=decisions.height,
        unsure=int((decisions["verdict"] == "unsure").sum()),
        train_rows=rows.height,
        without_text=int(decisions.filter(pl.col("verdict") != "unsure")["text"].null_count()),
        model_version=latest,
        estimate=metrics,
        decisions_file=review.decisions_file,
        reviewed_file=review.reviewed_file,
        metrics_file=review.metrics_file,
    )
    log.info("pull-predictions: %s", report)
    return report
