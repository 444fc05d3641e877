"""JSON for the hot path, without importing the `json` package.

`json` imports `re` (and `re` imports `enum`): more import time on every command than the JSON
work of a whole `create` (ARCHITECTURE.md, Startup speed).  The real work in `json` is done by its C accelerator `_json`; this
module drives the same accelerator directly.  Anything unusual falls back to `json` itself:
a document the fast reader refuses is re-read by `json.loads`, so errors carry json's exact
message and position, and whatever the C encoder cannot do (indentation) goes through the
small printer here or through `json`.
"""
from __future__ import annotations

import _json

_WHITESPACE = " \t\n\r"


def _no_constant(name: str):
    # json accepts NaN and Infinity; JSON (RFC 8259) does not, Go's encoding/json (runc, every
    # engine) refuses them, and a NaN that reached a limit or a timeout would compare false
    # with everything.
    raise ValueError(f"{name} is not valid JSON (JSON has no NaN or Infinity)")


class _ScanContext:
    """The attributes json.JSONDecoder hands to `_json.make_scanner`, with its defaults."""
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = staticmethod(_no_constant)


# typeshed types the context as a JSONDecoder; the scanner reads only these attributes.
_scan = _json.make_scanner(_ScanContext())  # type: ignore[arg-type]
# make_encoder(markers, default, encoder, indent, key_separator, item_separator, sort_keys,
#              skipkeys, allow_nan), as json.JSONEncoder calls it; by (compact, sort_keys).
# default None: an object JSON cannot hold raises TypeError, and `dumps` falls back to json.
_ENCODERS = {(compact, sort): _json.make_encoder(None, None,  # type: ignore[arg-type]
                                                 _json.encode_basestring_ascii, None,
                                                 ":" if compact else ": ", "," if compact else ", ",
                                                 sort, False, True)
             for compact in (False, True) for sort in (False, True)}


def loads(s: str | bytes | bytearray):
    """json.loads for UTF-8 text, refusing NaN and Infinity; every error is a ValueError."""
    try:
        text = s.decode("utf-8") if isinstance(s, (bytes, bytearray)) else s
        return _loads(text)
    except RecursionError:
        raise _too_deep() from None
    except Exception:  # noqa: BLE001 — json decides, and words the error
        import json
        try:
            return json.loads(s, parse_constant=_no_constant)
        except RecursionError:
            raise _too_deep() from None


def _too_deep() -> ValueError:
    # The C scanner recurses once per level and stops at the interpreter's recursion limit: a
    # document nested ~1,000 deep is bad input (Go's limit is 10,000; no config comes close).
    return ValueError("nested too deeply (arrays and objects more than ~1,000 levels deep)")


def _loads(text: str):
    i, n = 0, len(text)
    while i < n and text[i] in _WHITESPACE:
        i += 1
    obj, end = _scan(text, i)
    while end < n and text[end] in _WHITESPACE:
        end += 1
    if end != n:
        raise ValueError("extra data")
    return obj


def dumps(obj, compact: bool = False, sort_keys: bool = False) -> str:
    """json.dumps(obj, sort_keys=...), with separators=(",", ":") when `compact`."""
    try:
        return "".join(_ENCODERS[compact, sort_keys](obj, 0))
    except (TypeError, ValueError):
        import json
        return json.dumps(obj, separators=(",", ":") if compact else None, sort_keys=sort_keys)


def dumps_indented(obj, indent: str = "  ", _level: int = 0) -> str:
    """json.dumps(obj, indent=...) for dicts, lists and scalars (what `state` prints)."""
    if isinstance(obj, dict) and obj:
        if not all(isinstance(k, str) for k in obj):
            import json
            return json.dumps(obj, indent=indent).replace("\n", "\n" + indent * _level)
        inner = indent * (_level + 1)
        items = [f"{inner}{dumps(str(k))}: {dumps_indented(v, indent, _level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent * _level + "}"
    if isinstance(obj, (list, tuple)) and obj:
        inner = indent * (_level + 1)
        items = [inner + dumps_indented(v, indent, _level + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + indent * _level + "]"
    return dumps(obj)
