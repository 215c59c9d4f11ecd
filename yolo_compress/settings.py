"""Stage settings as frozen dataclasses: the one place where a setting's default, type and check live.

A stage declares its settings once, as fields made with :func:`setting`. Everything a user touches is derived
from that declaration: command-line flags (:meth:`Settings.add_arguments`), config-file keys and ``--set``
(:meth:`Settings.from_mapping`), the ``PruneModel`` keywords (their defaults read the class attributes) and the
extra ``args`` of a trainer (:meth:`Settings.from_args`).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from yolo_compress.errors import CompressError

S = TypeVar("S", bound="Settings")
Check = Callable[[Any], bool]


def setting(default: Any, help: str, *, check: Check | None = None, must: str = "", choices: Iterable[str] = (),
            metavar: str | None = None) -> Any:
    """A settings field: its default, a one-line help, and an optional value check.

    Args:
        default: the default value (immutable).
        help: what it does, for ``--help`` and the README.
        check: ``check(value) -> bool`` run on every non-``None`` value.
        must: what the check demands, for the error message (e.g. ``"> 0"``).
        choices: allowed string values.
        metavar: placeholder shown in ``--help``.
    """
    return dataclasses.field(default=default, metadata={
        "help": help, "check": check, "must": must, "choices": tuple(choices), "metavar": metavar})


def positive(v: Any) -> bool:
    return v > 0


def non_negative(v: Any) -> bool:
    return v >= 0


def unit_open(v: Any) -> bool:
    return 0 < v < 1


def fraction(v: Any) -> bool:
    return 0 <= v < 1


@dataclasses.dataclass(frozen=True)
class Settings:
    """Base of every stage's settings. Construction type-checks each field and runs its check.

    Raises:
        CompressError: a value of the wrong type, outside its range, or not among its choices.
    """

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is None and _allows_none(hints[f.name]):
                continue
            value = _coerce(f.name, hints[f.name], value)
            object.__setattr__(self, f.name, value)
            meta = f.metadata
            if meta.get("choices") and value not in meta["choices"]:
                raise CompressError(f"{f.name}={value!r} is not supported; use one of {', '.join(meta['choices'])}")
            if meta.get("check") and not meta["check"](value):
                raise CompressError(f"{f.name}={value!r}: must be {meta['must']}")

    # ---- views ---------------------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {f.name: f.default for f in dataclasses.fields(cls)}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_mapping(cls: type[S], values: Mapping[str, Any]) -> S:
        """Settings from a mapping of some of the keys (config file, ``--set``, keyword arguments).

        Raises:
            CompressError: an unknown key (the message suggests the closest one) or a bad value.
        """
        check_known(values, cls.field_names())
        return cls(**dict(values))

    @classmethod
    def pick(cls: type[S], values: Mapping[str, Any]) -> S:
        """Settings from the keys of ``values`` that belong to this class; ``None`` values mean the default."""
        return cls(**{k: v for k, v in values.items() if k in cls.field_names() and v is not None})

    @classmethod
    def from_args(cls: type[S], args: Any) -> S:
        """Settings from a trainer's ``args`` namespace (its extra keys); missing keys take the defaults."""
        return cls(**{k: getattr(args, k) for k in cls.field_names() if hasattr(args, k)})

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser, only: Iterable[str] | None = None) -> None:
        """Add a ``--flag`` per field (``round_to`` -> ``--round-to``); unset flags parse to ``None``."""
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if only is not None and f.name not in only:
                continue
            flag = "--" + f.name.replace("_", "-")
            meta = f.metadata
            help_text = f"{meta.get('help', '')} (default {f.default})"
            base = _base_type(hints[f.name])
            if base is bool:
                parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None,
                                    help=help_text)
                continue
            kind = {int: int, float: float, tuple: parse_ints}.get(base, str)
            parser.add_argument(flag, dest=f.name, type=kind, default=None, help=help_text,
                                choices=meta.get("choices") or None, metavar=meta.get("metavar"))


def check_known(values: Iterable[str], known: list[str], what: str = "key") -> None:
    """Reject names that are not in ``known``, suggesting the closest.

    Raises:
        CompressError: the first unknown name, with a suggestion.
    """
    for key in values:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known {what}s: {', '.join(known)}"
            raise CompressError(f"unknown {what} {key!r}{hint}")


def _allows_none(hint: Any) -> bool:
    return type(None) in typing.get_args(hint)


def _base_type(hint: Any) -> Any:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) is typing.Union or type(hint).__name__ == "UnionType":
        return _base_type(args[0]) if len(args) == 1 else hint
    return typing.get_origin(hint) or hint


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """Check ``value`` against the field type; ints are accepted for floats, sequences become tuples."""
    base = _base_type(hint)
    ok = {
        bool: lambda v: isinstance(v, bool),
        int: lambda v: isinstance(v, int) and not isinstance(v, bool),
        float: lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        str: lambda v: isinstance(v, str),
        tuple: lambda v: isinstance(v, (list, tuple)),
        dict: lambda v: isinstance(v, dict),
    }
    if base is tuple and isinstance(value, str):
        value = parse_ints(value)
    if base in ok and not ok[base](value):
        kind = getattr(base, "__name__", str(base))
        raise CompressError(f"{name!r} must be {kind}, got {value!r}")
    if base is float:
        return float(value)
    if base is tuple:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            raise CompressError(f"{name!r} must be a list of integers, got {value!r}")
        return tuple(value)
    return value


def parse_ints(text: str) -> tuple[int, ...]:
    """``"6,8,12"`` or ``"[6, 8, 12]"`` -> ``(6, 8, 12)``.

    Raises:
        CompressError: an entry is not an integer.
    """
    items = [i for i in str(text).strip("[]() ").replace(" ", "").split(",") if i]
    try:
        return tuple(int(i) for i in items)
    except ValueError as e:
        raise CompressError(f"{text!r} must be comma-separated integers, e.g. 15,18,21") from e
