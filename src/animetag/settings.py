"""Typed settings: every field of a settings dataclass read as its declared type and checked
against its range, each failure one line naming the setting. Used by the run settings
(`config`) and by plug-ins that own settings (`registry`)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def coerce(label: str, value: Any, kind: str) -> Any:
    """`value` as the declared type `kind` (int, float, bool, str, tuple[int, ...],
    tuple[str, ...]), or one ValueError naming the setting, the value and what is allowed."""
    def bad(what: str) -> ValueError:
        return ValueError(f"{label} = {value!r}: {what}")

    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise bad("expected true or false (or 1 / 0)")
    if kind == "int":
        if isinstance(value, bool):
            raise bad("expected an integer")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise bad("expected an integer") from None
        if not isinstance(value, int):
            raise bad("expected an integer")
        return value
    if kind == "float":
        if isinstance(value, bool):
            raise bad("expected a number")
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise bad("expected a number") from None
        if not math.isfinite(f):
            raise bad("expected a finite number")
        return f
    if kind.startswith("dict"):
        if not isinstance(value, dict):
            raise bad("expected a group of settings, e.g. {\"name\": value}")
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise bad("expected text")
        return value
    if kind.startswith("tuple["):
        inner = kind[6:].split(",")[0].strip()
        if isinstance(value, str) and inner == "str":
            value = [v for v in value.replace(",", " ").split() if v]
        if not isinstance(value, (list, tuple)):
            raise bad(f"expected a list of {'integers' if inner == 'int' else 'names'}, e.g. [1, 2]")
        return tuple(coerce(f"{label}[{i}]", v, inner) for i, v in enumerate(value))
    return value


def check(obj: Any, prefix: str = "", ranges: dict[str, tuple] | None = None,
           choices: dict[str, tuple] | None = None) -> None:
    """Every field of a settings dataclass parsed to its declared type, then checked against
    its range (`ranges`: name -> (low, high, low included, high included); None is open) and
    its allowed values (`choices`), each failure one line naming the setting."""
    for f in dataclasses.fields(obj):
        kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
        if kind.endswith("Config"):
            continue
        setattr(obj, f.name, coerce(prefix + f.name, getattr(obj, f.name), kind.replace(" ", "")))
    for name, (low, high, low_in, high_in) in (ranges or {}).items():
        values = getattr(obj, name)
        for v in values if isinstance(values, tuple) else (values,):
            below = low is not None and (v < low if low_in else v <= low)
            above = high is not None and (v > high if high_in else v >= high)
            if below or above:
                lo = "" if low is None else f"{'at least' if low_in else 'greater than'} {low}"
                hi = "" if high is None else f"{'at most' if high_in else 'below'} {high}"
                raise ValueError(f"{prefix}{name} = {values!r}: must be {' and '.join(x for x in (lo, hi) if x)}")
    for name, allowed in (choices or {}).items():
        if getattr(obj, name) not in allowed:
            raise ValueError(f"{prefix}{name} = {getattr(obj, name)!r}: must be one of {', '.join(map(str, allowed))}")


POSITIVE = (1, None, True, None)  # an integer of at least 1
NON_NEGATIVE = (0, None, True, None)
FRACTION = (0, 1, True, True)  # a probability
