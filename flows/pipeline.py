"""The one loop that runs the table of steps (flows/steps.py) for the CLI, DVC and Prefect.

A run is a dict of named values: the params sections, the raw paths, then whatever the steps
return (frames, the label set, metrics). Each step gets exactly the values its table row
names; a :class:`StepResult` (kept, removed, flags) narrows ``train`` and adds its removed
rows and flags, any other return value replaces the values its fields name (``quarantine``
is added to). Timing, progress and the step log come from here, so every path has them.
``call`` is how a step is executed: directly (CLI) or as a Prefect task (flows/prefect_flows.py).
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from curation.dedup import StepResult
from curation.ingest import InputFileError
from flows.files import output_frames, write_outputs
from flows.signing import RememberedSignatures, embed_hook, scale_hooks
from flows.steps import Step, pipeline_steps
from schemas.params import SECTIONS, Params
from schemas.records import FLAGS_SCHEMA, HOLD_REASON, QUARANTINE_SCHEMA, REMOVED_SCHEMA

log = logging.getLogger(__name__)

ACCUMULATED = ("quarantine",)  # values a step's output adds to instead of replacing
NEEDS_TEST = ("decontam",)  # steps that cannot run without a test split
StepCaller = Callable[[Step, dict[str, Any]], Any]


def peak_rss_mib() -> float:
    """This process's peak resident memory so far, in MiB (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def stage_names() -> tuple[str, ...]:
    return tuple(step.name for step in pipeline_steps())


@dataclass
class CurationRun:
    """What a run produced: its values, the steps run and their wall seconds."""

    values: dict[str, Any]
    stages_run: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    # the process's peak RSS so far at the end of each step (MiB): where memory goes at scale
    stage_peak_rss_mib: dict[str, float] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, Any]:
        return self.values.get("metrics") or {}

    def frame(self, name: str) -> pl.DataFrame:
        """A frame of the run by name: train, test, removed, held, flags, quarantine, validated_train."""
        return self.values[name]


def call_directly(step: Step, kwargs: dict[str, Any]) -> Any:
    return step.call(**kwargs)


def run_curation(
    train_path: Path,
    test_path: Path | None,
    *,
    params: Params,
    until: str = "report",
    reviews: pl.DataFrame | None = None,
    show_progress: bool = True,
    call: StepCaller = call_directly,
    note: Callable[[str], None] | None = None,
    embed: Callable[[list[str]], Any] | None = None,
) -> CurationRun:
    """Run the pipeline's steps in order up to and including ``until``.

    Args:
        reviews: reviewers' decisions (reviews.parquet), applied by the review step.
        call: executes one step (default: a plain call; the Prefect flow passes a task).
        note: also receives each step's summary line (the Prefect flow logs them).
        embed: texts -> embeddings, for ``noise.features: [embedding]`` (loads a model).

    Raises:
        InputFileError: a whole-file problem (the message names the file and the reason).
        ValueError: ``until`` is not a step.
    """
    steps = pipeline_steps()
    names = [s.name for s in steps]
    if until not in names:
        raise ValueError(f"unknown stage {until!r}; stages: {names}")
    todo = steps[: names.index(until) + 1]
    needing = [s.name for s in todo if s.name in NEEDS_TEST]
    if test_path is None and needing:
        raise InputFileError(
            f"{needing[0]} needs a test split: pass --test FILE or set data.test in params.yaml "
            "(ingest, validate and dedup run without one)"
        )
    values: dict[str, Any] = {section: getattr(params, section) for section in SECTIONS}
    values.update(
        train_path=train_path,
        test_path=test_path,
        params_dir=params.base_dir,
        reviews=reviews,
        decisions=None,
        noise_check=None,
        embed=embed,
        embed_compute=None,  # semantic embeddings here, unless scale_hooks opens a Dask cluster
        removed=pl.DataFrame(schema=REMOVED_SCHEMA),
        flags=pl.DataFrame(schema=FLAGS_SCHEMA),
        quarantine=pl.DataFrame(schema=QUARANTINE_SCHEMA),
        removal_reasons=tuple(r for s in steps for r in s.reasons),
        removal_stages=tuple(s.name for s in steps if s.reasons),
    )
    last_reader = {key: i for i, step in enumerate(todo) for key in step.reads}
    run = CurationRun(values=values)
    with (
        _progress(show_progress) as bar,
        scale_hooks(
            params.scale,
            params.dedup,
            on_scale=lambda scale: values.update(
                embed_compute=embed_hook(scale, params.semantic, params.base_dir)
            ),
        ) as (values["signer"], values["candidates"]),
    ):
        task = bar.add_task("curate", total=len(todo), note="") if bar else None

        def progress(text: str) -> None:
            if bar is not None and task is not None:
                bar.update(task, note=text)

        values["progress"] = progress
        for index, step in enumerate(todo):
            if bar is not None and task is not None:
                bar.update(task, description=f"curate: {step.name}", note="")
            started = time.perf_counter()
            _last_signing(values, index, last_reader)
            output = call(step, {key: values[key] for key in step.reads})
            summary = _merge(values, step, output)
            run.stage_seconds[step.name] = round(time.perf_counter() - started, 3)
            run.stage_peak_rss_mib[step.name] = peak_rss_mib()
            run.stages_run.append(step.name)
            _release_after(values, index, last_reader)
            seconds, peak_gib = run.stage_seconds[step.name], run.stage_peak_rss_mib[step.name] / 1024
            line = f"{summary} ({seconds:.1f} s, peak RSS so far {peak_gib:.2f} GiB)"
            log.info("%s: %s", step.name, line)
            if note is not None:
                note(f"{step.name}: {line}")
            if bar is not None and task is not None:
                bar.update(task, advance=1, note=summary)
    for transient in (
        "signer",
        "candidates",
        "progress",
        "embed",
        "embed_compute",
    ):  # may hold a closed Dask cluster
        values.pop(transient, None)
    return run


def write_run(run: CurationRun, out_dir: Path) -> list[Path]:
    """Write the files of the steps ``run`` ran into ``out_dir`` (all or nothing, with a manifest)."""
    return write_outputs(output_frames(run.values, run.stages_run), out_dir)


def _merge(values: dict[str, Any], step: Step, output: Any) -> str:
    """Fold a step's output into the run's values; returns the step's summary line."""
    if isinstance(output, StepResult):
        bad = sorted(set(output.removed["reason"].unique().to_list()) - {*step.reasons, HOLD_REASON})
        if bad:  # the table is the vocabulary: quality.json counts only declared reasons
            raise ValueError(f"step {step.name!r} removed rows with undeclared reason(s) {bad}")
        before = values["train"].height
        values["train"] = output.kept
        values["removed"] = pl.concat([values["removed"], output.removed.cast(REMOVED_SCHEMA)])
        if output.flags.height:
            values["flags"] = pl.concat(
                [values["flags"], output.flags.select(list(FLAGS_SCHEMA)).cast(FLAGS_SCHEMA)]
            )
        return (
            f"{before} rows -> {output.kept.height}; {output.removed.height} removed, "
            f"{output.flags.height} flagged"
        )
    fields = output._asdict() if hasattr(output, "_asdict") else dict(output)
    flags_before = values["flags"].height
    for key, value in fields.items():
        values[key] = pl.concat([values[key], value]) if key in ACCUMULATED else value
    return _describe(fields, flags_before=flags_before)


def _describe(fields: dict[str, Any], *, flags_before: int) -> str:
    parts = []
    for key in ("train", "test", "held", "quarantine"):
        if isinstance(fields.get(key), pl.DataFrame):
            parts.append(f"{fields[key].height} {key}")
    if isinstance(fields.get("flags"), pl.DataFrame):
        # a step returns the run's flags with its own added: its line counts its own, not the
        # total so far (on instruction data `noise` adds none to the checks' flags)
        total = fields["flags"].height
        parts.append(f"{total - flags_before} flags added ({total} in all)")
    if "metrics" in fields:
        parts.append("quality.json, report.html")
    return ", ".join(parts) or "done"


def _last_signing(values: dict[str, Any], index: int, last_reader: dict[str, int]) -> None:
    """Before the last step that signs: the remembered signatures may go as soon as that step
    has taken what it reuses (decontam's kept train rows), not only once it ends; at 10M rows
    they are ~5 GB beside that step's own copy of them."""
    signer = values.get("signer")
    if last_reader.get("signer", -1) == index and isinstance(signer, RememberedSignatures):
        signer.keep = False


def _release_after(values: dict[str, Any], index: int, last_reader: dict[str, int]) -> None:
    """Free the remembered MinHash signatures (~0.5 GB at 1M rows) once no later step signs."""
    signer = values.get("signer")
    if last_reader.get("signer", -1) == index and isinstance(signer, RememberedSignatures):
        signer.forget()


@contextmanager
def _progress(enabled: bool) -> Iterator[Progress | None]:
    if not enabled:
        yield None
        return
    columns = (
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[note]}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        yield progress


__all__ = ["CurationRun", "pipeline_steps", "run_curation", "stage_names", "write_run"]
