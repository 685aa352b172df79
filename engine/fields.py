"""Reading a parsed JSON object field by field: each check raises ``BundleError`` naming the
field that failed (``manifest.json: field 'input.height' is missing``), so a bad file fails in
one line at load. ``engine.bundle`` reads a manifest with it."""

from __future__ import annotations

from typing import Any, NoReturn

from vidseg.engine.errors import BundleError

__all__ = ["FieldReader"]


class FieldReader:
    """Checks of one JSON document; ``source`` (its path) starts every error. ``prefix`` is the
    dotted path of the object a field sits in (``"input."``), "" at the root."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, field_name: str, problem: str) -> NoReturn:
        raise BundleError(f"{self.source}: field '{field_name}' {problem}")

    def mapping(self, raw: Any, where: str) -> dict[str, Any]:
        """``raw`` itself when it is a JSON object (``where``: its field, "" for the root)."""
        if not isinstance(raw, dict):
            self.fail(where or "<root>", "must be a JSON object")
        return raw

    def get(self, obj: dict, key: str, kind: type, prefix: str = "", default: Any = ...) -> Any:
        """``obj[key]``, of type ``kind`` (a bool is no int); ``default`` when absent, if given."""
        if key not in obj:
            if default is not ...:
                return default
            self.fail(prefix + key, "is missing")
        value = obj[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            self.fail(prefix + key, f"must be {kind.__name__}, got {type(value).__name__}")
        return value

    def positive(self, obj: dict, key: str, prefix: str) -> int:
        value = self.get(obj, key, int, prefix)
        if value <= 0:
            self.fail(prefix + key, f"must be positive, got {value}")
        return value

    def choice(self, obj: dict, key: str, allowed: tuple[str, ...], prefix: str) -> str:
        value = self.get(obj, key, str, prefix)
        if value not in allowed:
            self.fail(prefix + key, f"is {value!r}, expected one of {', '.join(allowed)}")
        return value

    def shape(self, obj: dict, prefix: str) -> tuple[int, ...]:
        """``obj["shape"]``: a non-empty list of positive ints (a tensor's, batch axis excluded)."""
        shape = self.get(obj, "shape", list, prefix)
        if not shape or not all(isinstance(d, int) and d > 0 for d in shape):
            self.fail(prefix + "shape", "must list positive ints (batch axis excluded)")
        return tuple(shape)
