"""The curation pipeline as data: one table of steps, run by flows/pipeline.py.

Each :class:`Step` names the plain function it calls, the run values that function reads
(passed as keyword arguments: frames, params sections, the signer) and the reasons it may
remove rows with. A step returns either a :class:`~curation.dedup.StepResult` (kept,
removed, flags: the filter steps) or a NamedTuple whose fields replace run values of the
same name. The CLI (one subcommand per step: "run the table up to here"), `dvc repro`
(which runs `curagate curate`) and the `curate-dataset` Prefect flow (one task per step)
all run this table through the one loop.

Adding a step = one entry here + its function in curation/ (see the README's "Add a step").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from schemas.instruction_params import INSTRUCTION_CHECKS, InstructionParams
from schemas.params import (
    DataParams,
    DecontamParams,
    DedupParams,
    NoiseParams,
    ReportParams,
    ReviewParams,
)
from schemas.semantic_params import SemanticParams

if TYPE_CHECKING:
    from pathlib import Path

    import polars as pl

    from curation.dedup import CandidateSource, StepResult
    from curation.minhash import Signer

# The curation modules (polars, scipy, datasketch, pandera, sklearn, phonenumbers) are imported by
# the step that calls them, so building the CLI from this table costs no start-up time.


@dataclass(frozen=True)
class Step:
    """One row of the pipeline table."""

    name: str
    help: str  # one line: the CLI's help for `curagate <name>`
    call: Callable[..., Any]  # a plain function; keyword arguments named in `reads`
    reads: tuple[str, ...]
    reasons: tuple[str, ...] = ()  # reason codes of the rows it removes (quality.json counts each)
    io: bool = False  # touches files or the network: safe to retry (Prefect retries only these)
    command: bool = True  # a `curagate <name>` subcommand that runs the table up to here

    @property
    def command_name(self) -> str:
        return self.name.replace("_", "-")


# ── the steps' functions: adapters from run values to the pure curation functions ───────


class Validated(NamedTuple):
    train: pl.DataFrame
    test: pl.DataFrame
    validated_train: pl.DataFrame
    quarantine: pl.DataFrame  # added to the run's quarantine


class Reviewed(NamedTuple):
    train: pl.DataFrame
    removed: pl.DataFrame  # replaces the run's removed rows (reviewed ones are now reviewer_drop)
    held: pl.DataFrame
    flags: pl.DataFrame  # replaces the run's flags (now with a status)
    decisions: pl.DataFrame | None


class Reported(NamedTuple):
    metrics: dict[str, Any]
    report_html: str


def validate_step(
    *, train: pl.DataFrame, test: pl.DataFrame, label_set: list[str] | None, data: DataParams
) -> Validated:
    """Check every record against the raw-record contract; failures go to quarantine."""
    import polars as pl

    from curation.validate import validate_records

    valid_train, bad_train = validate_records(train, data=data, labels=label_set)
    valid_test, bad_test = validate_records(test, data=data, labels=label_set)
    # the raw line only serves quarantine, which has it now; kept, it is half the frame
    # (at 10M rows ~1.2 GB) through every later step. The files never write it.
    valid_train, valid_test = valid_train.drop("raw", strict=False), valid_test.drop("raw", strict=False)
    return Validated(valid_train, valid_test, valid_train, pl.concat([bad_train, bad_test]))


def dedup_step(
    *,
    train: pl.DataFrame,
    dedup: DedupParams,
    signer: Signer,
    candidates: CandidateSource | None,
    progress: Callable[[str], None] | None,
) -> StepResult:
    """Exact and near duplicates out; conflicting-label duplicates held for review."""
    from curation.dedup import drop_duplicates

    return drop_duplicates(train, cfg=dedup, signer=signer, candidates=candidates, progress=progress)


def decontam_step(
    *,
    train: pl.DataFrame,
    test: pl.DataFrame,
    decontam: DecontamParams,
    dedup: DedupParams,
    signer: Signer,
    semantic: SemanticParams,
    params_dir: Path,
    embed_compute: Callable[[list[str]], Any] | None = None,
) -> StepResult:
    """Train rows copying test rows out (the test split is never changed)."""
    from curation.decontam import remove_test_leaks

    emb_train = emb_test = None
    if semantic.enabled and decontam.semantic_threshold is not None and train.height and test.height:
        from flows.embed_cache import cached_embedder

        embed = cached_embedder(semantic, base_dir=params_dir, compute=embed_compute)
        emb_train, emb_test = embed(train["text"].to_list()), embed(test["text"].to_list())
    return remove_test_leaks(
        train,
        test,
        cfg=decontam,
        minhash=dedup,
        signer=signer,
        train_embeddings=emb_train,
        test_embeddings=emb_test,
    )


def semantic_step(
    *,
    train: pl.DataFrame,
    semantic: SemanticParams,
    params_dir: Path,
    embed_compute: Callable[[list[str]], Any] | None = None,
) -> StepResult:
    """Semantic near-duplicates flagged or removed, outliers flagged (semantic.enabled)."""
    import polars as pl

    from curation.dedup import StepResult
    from schemas.records import FLAGS_SCHEMA, REMOVED_SCHEMA

    if not semantic.enabled or train.height == 0:
        return StepResult(train, pl.DataFrame(schema=REMOVED_SCHEMA), pl.DataFrame(schema=FLAGS_SCHEMA))
    from curation.semantic import find_semantic_issues
    from flows.embed_cache import cached_embedder

    embeddings = cached_embedder(semantic, base_dir=params_dir, compute=embed_compute)(
        train["text"].to_list()
    )
    extra = None
    if semantic.one_word_min_words is not None and semantic.duplicate_policy != "off":
        from curation.decontam import one_word_pairs

        extra = one_word_pairs(
            train, min_words=semantic.one_word_min_words, same_label=semantic.one_word_same_label
        )
    return find_semantic_issues(train, embeddings=embeddings, cfg=semantic, extra_pairs=extra)


class Covered(NamedTuple):
    coverage: dict[str, Any]  # per class and per slice, for quality.json and report.html


def coverage_step(
    *,
    train: pl.DataFrame,
    validated_train: pl.DataFrame,
    removed: pl.DataFrame,
    held: pl.DataFrame,
    flags: pl.DataFrame,
    semantic: SemanticParams,
    report: ReportParams,
    params_dir: Path,
) -> Covered:
    """Coverage per class of the curated train (semantic.enabled) and counts per slice."""
    from curation.coverage import coverage_summary

    embeddings = None
    if semantic.enabled and train.height:
        from flows.embed_cache import cached_embedder

        embeddings = cached_embedder(semantic, base_dir=params_dir)(train["text"].to_list())
    return Covered(
        coverage_summary(
            train,
            validated=validated_train,
            removed=removed,
            held=held,
            flags=flags,
            embeddings=embeddings,
            semantic=semantic,
            slice_columns=report.slice_columns,
            max_slice_values=report.max_slice_values,
        )
    )


class Flagged(NamedTuple):
    flags: pl.DataFrame  # the run's flags with this step's added
    noise_check: Any  # curation.noise.NoiseCheck: whether it ran, and why not (quality.json, gate)


def noise_step(
    *,
    train: pl.DataFrame,
    flags: pl.DataFrame,
    label_set: list[str] | None,
    data: DataParams,
    noise: NoiseParams,
    progress: Callable[[str], None] | None,
    embed: Callable[[list[str]], Any] | None,
) -> Flagged:
    """Flag likely label errors from out-of-fold probabilities (train only; flags, no removals)."""
    import polars as pl

    from curation.noise import NoiseCheck, flag_label_issues, noise_check
    from schemas.records import FLAGS_SCHEMA

    if data.task != "classification" or not noise.enabled:
        return Flagged(flags, NoiseCheck(0, "disabled"))
    check = noise_check(train, label_set=label_set or [], cfg=noise)
    if check.skipped_reason is not None:
        return Flagged(flags, check)
    embeddings = embed(train["text"].to_list()) if "embedding" in noise.features and embed else None
    found, _ = flag_label_issues(
        train, label_set=label_set or [], cfg=noise, embeddings=embeddings, progress=progress
    )
    return Flagged(pl.concat([flags, found.select(list(FLAGS_SCHEMA))]), check)


def review_step(
    *,
    train: pl.DataFrame,
    removed: pl.DataFrame,
    flags: pl.DataFrame,
    validated_train: pl.DataFrame,
    reviews: pl.DataFrame | None,
    review: ReviewParams,
) -> Reviewed:
    """Apply the review policy: flagged rows held unless a reviewer decided."""
    from curation.policy import apply_review_policy
    from curation.review import resolve_decisions

    decisions = resolve_decisions(reviews, policy=review.conflict_policy) if reviews is not None else None
    outcome = apply_review_policy(
        kept=train, removed=removed, flags=flags, validated=validated_train, decisions=decisions
    )
    return Reviewed(*outcome, decisions=decisions)


def report_step(
    *,
    input_rows: dict[str, int],
    train: pl.DataFrame,
    test: pl.DataFrame,
    removed: pl.DataFrame,
    held: pl.DataFrame,
    quarantine: pl.DataFrame,
    flags: pl.DataFrame,
    validated_train: pl.DataFrame,
    label_set: list[str] | None,
    decisions: pl.DataFrame | None,
    noise_check: Any,
    removal_reasons: tuple[str, ...],
    removal_stages: tuple[str, ...],
    report: ReportParams,
    data: DataParams,
    instruction_checks: pl.DataFrame | None = None,
    coverage: dict[str, Any] | None = None,
) -> Reported:
    """Quality metrics (with the accounting check) and the HTML report."""
    from curation.decontam import count_test_leaks
    from curation.report import quality_metrics, render_report

    metrics = quality_metrics(
        input_rows=input_rows,
        curated_train=train,
        curated_test=test,
        removed=removed,
        held=held,
        quarantine=quarantine,
        flags=flags,
        validated_train_rows=validated_train.height,
        label_set=label_set,
        test_leaks_remaining=count_test_leaks(train, test),
        removal_reasons=removal_reasons,
        noise=noise_check,
        instruction=instruction_checks,
    )
    # 1 = labelled rows (classification): the gate's class-count checks apply; 0 = instruction/chat
    metrics["labelled_task"] = int(data.task == "classification")
    if coverage:
        from curation.coverage import coverage_metrics

        metrics.update(coverage_metrics(coverage, curated_rows=train.height))
    if decisions is not None:
        metrics["reviews_applied"] = int(decisions.height)
        metrics["reviews_disagreements"] = int(decisions["disagreement"].sum())
    planted = _planted_table(
        report, train=train, removed=removed, flags=flags, quarantine=quarantine, validated=validated_train
    )
    if planted is not None:
        from curation.report import planted_metrics

        metrics.update(planted_metrics(planted))
    coverage_section = None
    if coverage:
        from curation.coverage import render_coverage

        coverage_section = render_coverage(coverage, flags=flags, removed=removed, validated=validated_train)
    html = render_report(
        metrics=metrics,
        validated_train=validated_train,
        curated_train=train,
        removed=removed,
        held=held,
        quarantine=quarantine,
        flags=flags,
        top_flags=report.top_flags,
        stages=removal_stages,
        instruction=instruction_checks,
        planted=planted,
        coverage_section=coverage_section,
    )
    return Reported(metrics, html)


def _planted_table(
    report: ReportParams,
    *,
    train: pl.DataFrame,
    removed: pl.DataFrame,
    flags: pl.DataFrame,
    quarantine: pl.DataFrame,
    validated: pl.DataFrame,
) -> pl.DataFrame | None:
    """Planted vs caught when ``report.planted`` names the demo's truth file (else None).

    Skipped (with a warning) when the file's planted rows are not rows of this input: the
    truth of the demo's dirty split says nothing about another train file.
    """
    from curation.report import planted_vs_caught
    from flows.files import read_planted

    planted = read_planted(report, validated["id"])
    if planted is None:
        return None
    return planted_vs_caught(
        planted, curated_train=train, removed=removed, flags=flags, quarantine=quarantine
    )


class Checked(NamedTuple):
    train: pl.DataFrame
    removed: pl.DataFrame  # the run's removed rows with this step's (removed and held) added
    flags: pl.DataFrame
    instruction_checks: pl.DataFrame | None  # per check: rows, removed, held, examples (report)


def instruction_step(
    *,
    train: pl.DataFrame,
    removed: pl.DataFrame,
    flags: pl.DataFrame,
    data: DataParams,
    instruction: InstructionParams,
) -> Checked:
    """Instruction/chat quality checks on (prompt, response); classification data: a no-op."""
    if data.task not in ("instruction", "chat"):  # `auto` is resolved by ingest before this runs
        return Checked(train, removed, flags, None)
    import polars as pl

    from curation.instruction import detect_instruction_issues, language_inputs, summarise_instruction_checks
    from curation.policy import apply_instruction_policy
    from schemas.records import FLAGS_SCHEMA, REMOVED_SCHEMA

    languages = None
    if instruction.policy.non_target_language != "off":
        from flows.language import detect_languages

        languages = detect_languages(language_inputs(train, cfg=instruction))
    detected = detect_instruction_issues(train, cfg=instruction, languages=languages)
    outcome = apply_instruction_policy(detected, cfg=instruction)
    summary = summarise_instruction_checks(detected, cfg=instruction, primary=outcome.primary)
    return Checked(
        outcome.kept,
        pl.concat([removed, outcome.removed.cast(REMOVED_SCHEMA)]),
        pl.concat([flags, outcome.flags.select(list(FLAGS_SCHEMA)).cast(FLAGS_SCHEMA)]),
        summary,
    )


def ingest_step(*, train_path: Path, test_path: Path | None, data: DataParams, params_dir: Path) -> Any:
    """Read the raw train (and test) file; lines that are not records go to quarantine."""
    from flows.files import read_inputs

    return read_inputs(train_path=train_path, test_path=test_path, data=data, params_dir=params_dir)


# ── the table ────────────────────────────────────────────────────────────────────────
# ingest always runs first (it reads the files); the steps of STEPS follow, in this order.

INGEST = Step(
    "ingest",
    "Read raw train/test files; unreadable lines go to quarantine.parquet.",
    ingest_step,
    reads=("train_path", "test_path", "data", "params_dir"),
    io=True,
)

STEPS: list[Step] = [
    Step(
        "validate",
        "Ingest, then check every record against the schema (quarantine with reasons).",
        validate_step,
        reads=("train", "test", "label_set", "data"),
    ),
    Step(
        "instruction",
        "... then instruction/chat quality checks (removed or held with the check's code).",
        instruction_step,
        reads=("train", "removed", "flags", "data", "instruction"),
        reasons=INSTRUCTION_CHECKS,  # HOLD_REASON too, for the checks whose policy is flag
        command=False,  # `curagate dedup` (and every later step) runs it and writes its files
    ),
    Step(
        "dedup",
        "... then remove exact and near duplicates (removed.parquet, flags.parquet).",
        dedup_step,
        reads=("train", "dedup", "signer", "candidates", "progress"),
        reasons=("exact_duplicate", "near_duplicate"),
    ),
    Step(
        "decontam",
        "... then remove train rows that copy test rows (reason test_leak).",
        decontam_step,
        reads=("train", "test", "decontam", "dedup", "signer", "semantic", "params_dir", "embed_compute"),
        reasons=("test_leak",),
    ),
    Step(
        "semantic",
        "... then semantic near-duplicates (flag or remove) and outliers, on embeddings.",
        semantic_step,
        reads=("train", "semantic", "params_dir", "embed_compute"),
        reasons=("semantic_duplicate",),
    ),
    Step(
        "noise",
        "... then flag likely label errors with cleanlab (flags.parquet).",
        noise_step,
        reads=("train", "flags", "label_set", "data", "noise", "progress", "embed"),
    ),
    Step(
        "review",
        "... then apply reviewers' decisions: flagged rows held (held.parquet) until decided.",
        review_step,
        reads=("train", "removed", "flags", "validated_train", "reviews", "review"),
        reasons=("reviewer_drop",),
        command=False,  # `curagate review` is push/pull; `curagate curate --reviews F` applies them
    ),
    Step(
        "coverage",
        "Coverage per class and counts per slice of the curated train (quality.json).",
        coverage_step,
        reads=("train", "validated_train", "removed", "held", "flags", "semantic", "report", "params_dir"),
        command=False,
    ),
    Step(
        "report",
        "All curation stages: train/test.parquet, removed, held, flags, quality.json, report.html.",
        report_step,
        reads=(
            "input_rows",
            "train",
            "test",
            "removed",
            "held",
            "quarantine",
            "flags",
            "validated_train",
            "label_set",
            "decisions",
            "noise_check",
            "removal_reasons",
            "removal_stages",
            "report",
            "data",
            "instruction_checks",
            "coverage",
        ),
    ),
]


def pipeline_steps() -> list[Step]:
    """ingest, then the table (read at call time, so a step added to it is run everywhere)."""
    return [INGEST, *STEPS]
