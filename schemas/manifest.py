"""manifest.json: what one curate run wrote (file -> md5, bytes, rows), written last.

A curate run writes its files into a fresh directory and swaps it in whole; the manifest is
the run's seal. Gate and train verify it, so a directory holding files of two runs (a
crash, a hand edit, a copied-in file) is refused instead of judged.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl
from pydantic import BaseModel, ConfigDict, ValidationError

MANIFEST_FILE = "manifest.json"


class ManifestError(RuntimeError):
    """The manifest is missing or unreadable, or the files do not match it; says which file."""


def file_md5(path: Path) -> str:
    """md5 of a file's bytes: the same digest DVC records for a single file."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FileEntry(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    md5: str
    bytes: int
    rows: int | None = None  # parquet files: row count


class Manifest(BaseModel):
    """The files of one curate run."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    files: dict[str, FileEntry]

    def rows(self, name: str) -> int | None:
        entry = self.files.get(name)
        return entry.rows if entry else None


def describe_files(directory: Path, names: list[str]) -> Manifest:
    """The manifest of ``names`` (files inside ``directory``) as they are on disk now."""
    files = {}
    for name in sorted(names):
        path = directory / name
        rows = pl.scan_parquet(path).select(pl.len()).collect().item() if name.endswith(".parquet") else None
        files[name] = FileEntry(md5=file_md5(path), bytes=path.stat().st_size, rows=rows)
    return Manifest(files=files)


def write_manifest(directory: Path, manifest: Manifest) -> Path:
    path = directory / MANIFEST_FILE
    path.write_text(json.dumps(manifest.model_dump(), indent=1, sort_keys=True) + "\n", encoding="utf-8")
    return path


def verify_manifest(directory: Path) -> Manifest:
    """The manifest of ``directory``, after checking every listed file against it.

    Raises:
        ManifestError: no or corrupt manifest.json, or a listed file missing or changed.
    """
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise ManifestError(f"{path}: no manifest; this is not a complete `curagate curate` output")
    try:
        manifest = Manifest.model_validate_json(path.read_text(encoding="utf-8"))
    except (ValidationError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: corrupt manifest ({_first_error(exc)})") from exc
    problems = []
    for name, entry in manifest.files.items():
        file = directory / name
        if not file.is_file():
            problems.append(f"{name} missing")
        elif file.stat().st_size != entry.bytes or file_md5(file) != entry.md5:
            problems.append(f"{name} changed since curate wrote it")
    if problems:
        raise ManifestError(
            f"{directory}: files do not match its manifest ({'; '.join(problems)}): "
            "re-run `curagate curate` into this directory"
        )
    return manifest


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "document"
        return f"{where}: {err.get('msg')}"
    return str(exc)
