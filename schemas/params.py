"""The one typed config: frozen dataclasses mirroring params.yaml, loaded once by entry points.

Every section is checked on construction (unknown keys, bad values, cross-field rules) so a
typo in params.yaml fails at start with the key's name instead of silently using a default.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from schemas.compare_params import CompareParams, DemoParams
from schemas.instruction_params import InstructionParams
from schemas.monitor_params import MonitorParams, PredictParams
from schemas.registry_params import RegistryParams
from schemas.review_params import LabelStudioParams, PredictionReviewParams
from schemas.scale_params import ScaleParams
from schemas.semantic_params import SemanticParams
from schemas.training_params import EvaluateParams, GateParams, SweepParams, TrainParams
from schemas.typed import ParamsError, build, check_fraction, check_near_duplicate_rule

TaskKind = Literal["classification", "instruction", "chat", "auto"]
TASKS = ("classification", "instruction", "chat", "auto")


@dataclass(frozen=True)
class ColumnMap:
    """Canonical column name -> the column's name in the input files."""

    id: str = "id"
    text: str = "text"
    label: str = "label"
    instruction: str = "instruction"
    input: str = "input"
    output: str = "output"
    prompt: str = "prompt"
    response: str = "response"
    messages: str = "messages"


@dataclass(frozen=True)
class DataParams:
    train: str = "data/raw/train.jsonl"
    test: str | None = None  # no test split: stages that need one (decontam) say so
    task: TaskKind = "auto"  # auto: decided from the first records of the train file
    columns: ColumnMap = field(default_factory=ColumnMap)
    # a list of labels, a path to a JSON/YAML/text file, or None (= labels seen in test)
    labels: tuple[str | int, ...] | str | None = None
    max_text_chars: int = 20_000
    # more train files read after ``train`` (e.g. reviewed production answers); same columns
    extra_train: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task={self.task!r} must be one of {list(TASKS)}")
        if self.max_text_chars <= 0:
            raise ValueError("max_text_chars must be positive")
        if self.labels == ():
            raise ValueError("labels: an empty label set would quarantine every row; use null (= from test)")


@dataclass(frozen=True)
class DedupParams:
    shingle: Literal["char", "word"] = "char"
    ngram: int = 5
    num_perm: int = 128
    lsh_threshold: float = 0.4
    threshold: float = 0.9
    max_char_edits: int = 1
    word_order: bool = True
    seed: int = 1
    bands_per_pass: int = 8
    one_edit_keys_per_pass: int | None = 100_000_000
    engine: Literal["datasketch", "fast"] = "fast"

    def __post_init__(self) -> None:
        if self.bands_per_pass < 1:
            raise ValueError("bands_per_pass must be >= 1")
        if self.one_edit_keys_per_pass is not None and self.one_edit_keys_per_pass < 1:
            raise ValueError("one_edit_keys_per_pass must be >= 1 or null")
        if self.engine not in ("datasketch", "fast"):
            raise ValueError(f"engine={self.engine!r} must be 'datasketch' or 'fast'")
        if self.shingle not in ("char", "word"):
            raise ValueError(f"shingle={self.shingle!r} must be 'char' or 'word'")
        if self.ngram < 1 or self.num_perm < 2:
            raise ValueError("ngram must be >= 1 and num_perm >= 2")
        check_near_duplicate_rule("dedup", self.lsh_threshold, self.threshold, self.max_char_edits)


@dataclass(frozen=True)
class DecontamParams:
    lsh_threshold: float = 0.4
    threshold: float = 0.9
    max_char_edits: int = 1
    word_order: bool = True
    one_word: bool = True  # one word substituted, inserted or deleted (normalised text)
    one_word_min_words: int = 10
    semantic_threshold: float | None = None  # cosine to a test row; needs semantic.enabled
    same_label: bool = True  # the one-word and semantic rules count only rows with the test row's label

    def __post_init__(self) -> None:
        check_near_duplicate_rule("decontam", self.lsh_threshold, self.threshold, self.max_char_edits)
        if self.one_word_min_words < 1:
            raise ValueError("one_word_min_words must be >= 1")
        if self.semantic_threshold is not None:
            check_fraction("decontam", semantic_threshold=self.semantic_threshold)


@dataclass(frozen=True)
class NoiseParams:
    enabled: bool = True
    folds: int = 5
    seed: int = 0
    features: tuple[str, ...] = ("tfidf_word",)
    classifier: str = "sgd"
    alpha: float = 3e-5
    C: float = 10.0
    max_iter: int = 30
    filter_by: str = "low_self_confidence"
    min_self_confidence: float = 0.0
    max_fit_rows: int | None = 100_000
    min_fit_rows_per_class: int = 500
    n_jobs: int | None = -1
    min_class_rows: int = 10

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ValueError("folds must be >= 2")
        if self.max_fit_rows is not None and self.max_fit_rows < 1:
            raise ValueError("max_fit_rows must be >= 1 or null")
        if self.n_jobs == 0:
            raise ValueError("n_jobs must be a number of threads or -1 (all cores), not 0")
        if self.min_fit_rows_per_class < 1 or self.min_class_rows < 1:
            raise ValueError("min_fit_rows_per_class and min_class_rows must be >= 1")
        allowed = {"tfidf_word", "tfidf_char", "hashed", "embedding"}
        bad = sorted(set(self.features) - allowed)
        if bad or not self.features:
            raise ValueError(f"features {bad or '[]'} not in {sorted(allowed)}")
        if self.classifier not in ("sgd", "logreg"):
            raise ValueError(f"classifier={self.classifier!r} must be 'sgd' or 'logreg'")
        if self.alpha <= 0 or self.C <= 0 or self.max_iter < 1:
            raise ValueError("alpha and C must be > 0 and max_iter >= 1")
        filters = {
            "prune_by_noise_rate",
            "prune_by_class",
            "both",
            "confident_learning",
            "predicted_neq_given",
            "low_normalized_margin",
            "low_self_confidence",
        }
        if self.filter_by not in filters:
            raise ValueError(f"filter_by={self.filter_by!r} not in {sorted(filters)}")
        check_fraction("noise", min_self_confidence=self.min_self_confidence)


@dataclass(frozen=True)
class ReviewParams:
    decisions: str | None = None
    conflict_policy: Literal["latest", "majority"] = "latest"

    def __post_init__(self) -> None:
        if self.conflict_policy not in ("latest", "majority"):
            raise ValueError("conflict_policy must be 'latest' or 'majority'")


@dataclass(frozen=True)
class ReportParams:
    top_flags: int = 30
    slice_columns: tuple[str, ...] | None = None  # null = auto: extra input columns with few values
    max_slice_values: int = 20

    def __post_init__(self) -> None:
        if self.max_slice_values < 2:
            raise ValueError("max_slice_values must be >= 2")

    planted: str | None = None  # planted.parquet of `curagate demo-data`: the report shows planted vs caught


@dataclass(frozen=True)
class Params:
    """The whole params.yaml, every section typed. Built once by an entry point
    (:func:`load_params`); each stage receives only its own section."""

    data: DataParams = field(default_factory=DataParams)
    dedup: DedupParams = field(default_factory=DedupParams)
    decontam: DecontamParams = field(default_factory=DecontamParams)
    noise: NoiseParams = field(default_factory=NoiseParams)
    review: ReviewParams = field(default_factory=ReviewParams)
    report: ReportParams = field(default_factory=ReportParams)
    gate: GateParams = field(default_factory=GateParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    sweep: SweepParams = field(default_factory=SweepParams)
    scale: ScaleParams = field(default_factory=ScaleParams)
    labelstudio: LabelStudioParams = field(default_factory=LabelStudioParams)
    prediction_review: PredictionReviewParams = field(default_factory=PredictionReviewParams)
    instruction: InstructionParams = field(default_factory=InstructionParams)
    predict: PredictParams = field(default_factory=PredictParams)
    monitor: MonitorParams = field(default_factory=MonitorParams)
    semantic: SemanticParams = field(default_factory=SemanticParams)
    registry: RegistryParams = field(default_factory=RegistryParams)
    demo: DemoParams = field(default_factory=DemoParams)
    compare: CompareParams = field(default_factory=CompareParams)
    # where the values came from: relative paths inside (data.labels) resolve against it
    base_dir: Path = field(default=Path("."), compare=False, repr=False)
    source: str = field(default="built-in defaults", compare=False)


# where the CLI, dvc.yaml and the Prefect flows put things unless told otherwise
DEFAULT_CURATED_DIR = "data/curated"
DEFAULT_MODEL_DIR = "models"
DEFAULT_REPORTS_DIR = "reports"
SECTIONS = tuple(f.name for f in dataclasses.fields(Params) if f.name not in ("base_dir", "source"))
PARAMS_FILE = "params.yaml"


def params_from_dict(raw: Any, where: str = "params", base_dir: Path = Path(".")) -> Params:
    """Build :class:`Params` from a parsed params.yaml (None = every default).

    Raises:
        ParamsError: not a mapping, an unknown section or key, or a value of the wrong type.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(
            f"{where}: expected a mapping of sections ({', '.join(SECTIONS)}) at the top level, "
            f"got {type(raw).__name__}"
        )
    unknown = sorted(str(k) for k in raw if k not in SECTIONS)
    if unknown:  # a misspelt section (`dedupe:`) would otherwise be silently ignored
        close = difflib.get_close_matches(unknown[0], SECTIONS, n=1)
        maybe = f" (did you mean {close[0]!r}?)" if close else ""
        raise ParamsError(f"{where}: unknown section(s) {unknown}{maybe}; known: {list(SECTIONS)}")
    params = build(Params, raw, where)
    return dataclasses.replace(params, base_dir=base_dir, source=where)


def load_params(path: str | Path | None) -> Params:
    """Load params.yaml; ``None`` gives the built-in defaults (columns id, text, label).

    Raises:
        ParamsError: unreadable file, invalid YAML, or an invalid value (naming its key).
    """
    if path is None:
        return params_from_dict({})
    import yaml  # here, not at the top: `curagate --help` reads no YAML

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ParamsError(f"{path}: params file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ParamsError(f"{path}: cannot read params file ({exc})") from exc
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    return params_from_dict(raw, where=str(path), base_dir=path.parent)


def find_params(explicit: str | Path | None, cwd: Path | None = None) -> Path | None:
    """The params file an entry point uses: ``--params``, else ./params.yaml, else none (defaults)."""
    if explicit is not None:
        return Path(explicit)
    candidate = (cwd or Path.cwd()) / PARAMS_FILE
    return candidate if candidate.is_file() else None


def load_label_set(labels: tuple[str | int, ...] | str | None, base_dir: Path) -> list[str] | None:
    """Resolve ``data.labels``: a list as is, or a JSON/YAML/plain-text file (one a line).

    Raises:
        ParamsError: the file is unreadable, not valid JSON/YAML, or not a non-empty list of labels.
    """
    if labels is None:
        return None
    import yaml

    if isinstance(labels, tuple):
        if not labels:
            raise ParamsError("data.labels: an empty label set would quarantine every row; use null")
        return [str(x) for x in labels]
    path = Path(labels)
    if not path.is_absolute():
        path = base_dir / path
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ParamsError(f"{path}: cannot read label set (data.labels): {exc}") from exc
    try:
        if path.suffix == ".json":
            parsed = json.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            parsed = yaml.safe_load(text)
        else:
            parsed = [line.strip() for line in text.splitlines() if line.strip()]
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ParamsError(
            f"{path}: label set (data.labels) is not valid {path.suffix[1:].upper()}: {exc}"
        ) from exc
    if not isinstance(parsed, list) or not parsed:
        raise ParamsError(f"{path}: label set (data.labels) must be a non-empty list")
    if not all(isinstance(x, str | int) and not isinstance(x, bool) for x in parsed):
        raise ParamsError(f"{path}: label set (data.labels) must list strings (or integer class ids)")
    return [str(x) for x in parsed]
