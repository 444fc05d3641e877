"""`Record`: a bag of named fields with defaults — what we would use @dataclass for.

No `dataclasses` on the engine commands' path (ARCHITECTURE.md, Startup speed).  A subclass lists its fields and defaults in `FIELDS`; `list` and
`dict` as a default mean "a fresh empty one per object".  The fields are set with setattr, so a
subclass also annotates each at class level (no value there: FIELDS holds the defaults), for a
type checker to see them.
"""
from __future__ import annotations


class Record:
    FIELDS: dict[str, object] = {}

    def __init__(self, **values: object) -> None:
        for name, default in self.FIELDS.items():
            if name in values:
                value = values.pop(name)
            elif default is list or default is dict:
                value = default()
            else:
                value = default
            setattr(self, name, value)
        if values:
            raise TypeError(f"{type(self).__name__}: unknown fields {', '.join(values)}")

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({inner})"
