"""Strict construction of the frozen config dataclasses from parsed YAML.

Every value is checked against its field's type annotation before the dataclass's own
cross-field checks run, so ``noise.enabled: "false"`` or ``features: tfidf_word`` (a string
where a list is expected) is refused with its key path instead of being silently misread.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Literal


class ParamsError(ValueError):
    """params.yaml (or a section of it) is invalid; the message names the key."""


_TYPE_WORDS = {bool: "true/false", int: "an integer", float: "a finite number", str: "a string"}
_PLURAL_WORDS = {bool: "true/false values", int: "integers", float: "numbers", str: "strings"}


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if hint is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(hint))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return f"a list of {_PLURAL_WORDS.get(item, _describe(item))}"
    if dataclasses.is_dataclass(hint):
        return "a mapping"
    return _TYPE_WORDS.get(hint, getattr(hint, "__name__", str(hint)))


def _shown(value: Any) -> str:
    text = repr(value)
    return f"{text[:60]}..." if len(text) > 60 else text


class _Mismatch(Exception):
    pass


def _coerce(hint: Any, value: Any, where: str, path: str) -> Any:
    """``value`` as ``hint`` (YAML lists become tuples, ints widen to floats) or _Mismatch."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if hint is type(None):
        if value is None:
            return None
        raise _Mismatch
    if dataclasses.is_dataclass(hint):
        return build(typing.cast(type, hint), value, where, path)
    if origin is Literal:
        if value in typing.get_args(hint) and type(value) in {type(a) for a in typing.get_args(hint)}:
            return value
        raise _Mismatch
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(hint):
            try:
                return _coerce(option, value, where, path)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _Mismatch
        (item,) = typing.get_args(hint)[:1]
        return tuple(_coerce(item, v, where, path) for v in value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is float:  # .inf / .nan would reach gate.json as Infinity / NaN: not JSON
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    raise TypeError(f"{path}: unsupported annotation {hint!r}")  # a bug in a config class


def build(cls: type, raw: Any, where: str, path: str = "") -> Any:
    """Construct dataclass ``cls`` from a mapping; unknown keys and wrong types fail with their path.

    Args:
        where: the file (or other source) named first in messages.
        path: the key path of ``raw`` inside it (``noise``, ``labelstudio.pii``); "" at the top.

    Raises:
        ParamsError: the message names the key path, what was expected and what was given.
    """
    if raw is None:
        raw = {}
    here = f"{where}: {path}" if path else where
    if not isinstance(raw, dict):
        raise ParamsError(f"{here}: expected a mapping, got {type(raw).__name__} {_shown(raw)}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
        hint = difflib.get_close_matches(unknown[0], known, n=1)
        maybe = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ParamsError(f"{here}: unknown key(s) {unknown}{maybe}; known: {sorted(known)}")
    kwargs: dict[str, Any] = {}
    for name, value in raw.items():
        try:
            kwargs[name] = _coerce(hints[name], value, where, f"{path}.{name}" if path else name)
        except _Mismatch:
            key = f"{path}.{name}" if path else name
            given = f"{type(value).__name__} {_shown(value)}"
            raise ParamsError(f"{where}: {key}: expected {_describe(hints[name])}, got {given}") from None
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ParamsError):
            raise
        raise ParamsError(f"{here}: {exc}") from exc


def check_fraction(where: str, **values: float) -> None:
    """Each value within [0, 1]."""
    for name, value in values.items():
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}={value} must be within [0, 1] ({where})")


def check_near_duplicate_rule(
    where: str, lsh_threshold: float, threshold: float, max_char_edits: int
) -> None:
    """The candidate search (LSH) must reach at least as far as the rule that verifies it."""
    check_fraction(where, threshold=threshold, lsh_threshold=lsh_threshold)
    if lsh_threshold > threshold:
        raise ValueError("lsh_threshold must not exceed threshold (candidates would be lost)")
    if max_char_edits < 0:
        raise ValueError("max_char_edits must be >= 0")
