"""The one typed config: frozen dataclasses mirroring params.yaml, loaded once by entry points.

Every section is checked on construction (unknown keys, bad values, cross-field rules) so a
typo in params.yaml fails at start with the key's name instead of silently using a default.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

TaskKind = Literal["classification", "instruction"]


class ParamsError(ValueError):
    """params.yaml (or a section of it) is invalid; the message names the key."""


def _build(cls: type, raw: Any, where: str) -> Any:
    """Construct dataclass ``cls`` from a mapping, rejecting unknown keys with their path."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ParamsError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(typing.cast(type, hint), value, f"{where}.{name}")
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            kwargs[name] = tuple(value)
        elif hint is float and isinstance(value, int) and not isinstance(value, bool):
            kwargs[name] = float(value)
        elif typing.get_origin(hint) in (typing.Union, types.UnionType) and isinstance(value, list):
            kwargs[name] = tuple(value)
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise ParamsError(f"{where}: {exc}") from exc


def _check_fraction(where: str, **values: float) -> None:
    for name, value in values.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}={value} must be within [0, 1] ({where})")


def _check_near_duplicate_rule(
    where: str, lsh_threshold: float, threshold: float, max_char_edits: int
) -> None:
    """The candidate search (LSH) must reach at least as far as the rule that verifies it."""
    _check_fraction(where, threshold=threshold, lsh_threshold=lsh_threshold)
    if lsh_threshold > threshold:
        raise ValueError("lsh_threshold must not exceed threshold (candidates would be lost)")
    if max_char_edits < 0:
        raise ValueError("max_char_edits must be >= 0")


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


@dataclass(frozen=True)
class DataParams:
    train: str = "data/raw/train.jsonl"
    test: str = "data/raw/test.jsonl"
    task: TaskKind = "classification"
    columns: ColumnMap = field(default_factory=ColumnMap)
    # a list of labels, a path to a JSON/YAML/text file, or None (= labels seen in test)
    labels: tuple[str, ...] | str | None = None
    max_text_chars: int = 20_000

    def __post_init__(self) -> None:
        if self.task not in ("classification", "instruction"):
            raise ValueError(f"task={self.task!r} must be 'classification' or 'instruction'")
        if self.max_text_chars <= 0:
            raise ValueError("max_text_chars must be positive")


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

    def __post_init__(self) -> None:
        if self.bands_per_pass < 1:
            raise ValueError("bands_per_pass must be >= 1")
        if self.shingle not in ("char", "word"):
            raise ValueError(f"shingle={self.shingle!r} must be 'char' or 'word'")
        if self.ngram < 1 or self.num_perm < 2:
            raise ValueError("ngram must be >= 1 and num_perm >= 2")
        _check_near_duplicate_rule("dedup", self.lsh_threshold, self.threshold, self.max_char_edits)


@dataclass(frozen=True)
class DecontamParams:
    lsh_threshold: float = 0.4
    threshold: float = 0.9
    max_char_edits: int = 1
    word_order: bool = True

    def __post_init__(self) -> None:
        _check_near_duplicate_rule("decontam", self.lsh_threshold, self.threshold, self.max_char_edits)


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
        _check_fraction("noise", min_self_confidence=self.min_self_confidence)


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


@dataclass(frozen=True)
class CurationParams:
    """The sections the curation stages read."""

    data: DataParams = field(default_factory=DataParams)
    dedup: DedupParams = field(default_factory=DedupParams)
    decontam: DecontamParams = field(default_factory=DecontamParams)
    noise: NoiseParams = field(default_factory=NoiseParams)
    review: ReviewParams = field(default_factory=ReviewParams)
    report: ReportParams = field(default_factory=ReportParams)


@dataclass(frozen=True)
class Params(CurationParams):
    """The whole params.yaml. Sections other stages own are kept as raw mappings here and
    typed by their own dataclasses where they are read (gate, train, evaluate, labelstudio)."""

    extra: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str) -> dict[str, Any]:
        return dict(self.extra.get(name) or {})


CURATION_SECTIONS = tuple(f.name for f in dataclasses.fields(CurationParams))


def params_from_dict(raw: dict[str, Any] | None, where: str = "params") -> Params:
    """Build :class:`Params` from a parsed params.yaml mapping."""
    raw = dict(raw or {})
    typed = {k: raw.pop(k) for k in CURATION_SECTIONS if k in raw}
    base = _build(CurationParams, typed, where)
    return Params(**{f: getattr(base, f) for f in CURATION_SECTIONS}, extra=raw)


def load_params(path: str | Path | None) -> Params:
    """Load params.yaml; ``None`` gives the built-in defaults (columns id, text, label)."""
    if path is None:
        return params_from_dict({})
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ParamsError(f"{path}: params file not found") from exc
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML: {exc}") from exc
    return params_from_dict(raw, where=str(path))


def load_label_set(labels: tuple[str, ...] | str | None, base_dir: Path) -> list[str] | None:
    """Resolve ``data.labels``: a list as is, or a JSON/YAML/plain-text file (one a line)."""
    if labels is None:
        return None
    if isinstance(labels, tuple):
        return [str(x) for x in labels]
    path = Path(labels)
    if not path.is_absolute():
        path = base_dir / path
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ParamsError(f"{path}: cannot read label set ({exc.strerror})") from exc
    if path.suffix == ".json":
        parsed = json.loads(text)
    elif path.suffix in (".yaml", ".yml"):
        parsed = yaml.safe_load(text)
    else:
        parsed = [line.strip() for line in text.splitlines() if line.strip()]
    if not isinstance(parsed, list) or not parsed:
        raise ParamsError(f"{path}: label set must be a non-empty list")
    return [str(x) for x in parsed]
