"""ocirun.jsonio drives json's C accelerator without importing `json` (and `re`): it must read
and write exactly what `json` does, and leave every error to `json`'s own words."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ocirun import jsonio

DOCS = [
    {}, [], "", 0, -1, 1.5, 1e300, -0.0, True, False, None, "x\u00e9\n\t\"\\",
    {"a": [1, 2.5, None, True, False, "x\u00e9\n"], "b": {}, "c": [], "d": {"e": {"f": [{}]}}},
    {"ociVersion": "1.2.0", "process": {"args": ["sh", "-c", "echo 'hi'"], "env": ["A=1"]},
     "linux": {"resources": {"memory": {"limit": 1 << 40}}, "uidMappings": [{"size": 65536}]}},
]


@pytest.mark.parametrize("doc", DOCS)
def test_writes_like_json(doc):
    assert jsonio.dumps(doc) == json.dumps(doc)
    assert jsonio.dumps(doc, compact=True) == json.dumps(doc, separators=(",", ":"))
    assert jsonio.dumps(doc, compact=True, sort_keys=True) == json.dumps(doc, separators=(",", ":"), sort_keys=True)
    assert jsonio.dumps(doc, sort_keys=True) == json.dumps(doc, sort_keys=True)
    for indent in ("  ", "    ", "\t"):
        assert jsonio.dumps_indented(doc, indent) == json.dumps(doc, indent=indent)


@pytest.mark.parametrize("doc", DOCS)
def test_reads_like_json(doc):
    for text in (json.dumps(doc), json.dumps(doc, indent=3), " \n" + json.dumps(doc) + "\r\n"):
        assert jsonio.loads(text) == json.loads(text)
        assert jsonio.loads(text.encode()) == json.loads(text)


@pytest.mark.parametrize("bad", ["", "{", "[1,]", "{} x", '{"a" 1}', "\ufeff{}", "nul", '"\x01"'])
def test_errors_are_jsons_own(bad):
    with pytest.raises(ValueError) as ours:
        jsonio.loads(bad)
    with pytest.raises(ValueError) as theirs:
        json.loads(bad)
    assert str(ours.value) == str(theirs.value)


def test_values_json_cannot_write_natively_still_work():
    assert jsonio.dumps({1: 2}) == json.dumps({1: 2})
    assert jsonio.dumps_indented({1: {"a": 1}}) == json.dumps({1: {"a": 1}}, indent=2)
    with pytest.raises(TypeError):
        jsonio.dumps({"a": object()})


def test_does_not_import_json_or_re():
    code = ("import sys; from ocirun import jsonio; "
            "jsonio.loads(jsonio.dumps_indented({'a': [1, 'x']})); "
            "print(sorted(m for m in ('json', 're', 'enum') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True,
                         cwd="/").stdout
    assert out.strip() == "[]"


# Issue 13 item 11: JSON has no NaN or Infinity (RFC 8259), and a document nested past Python's
# recursion limit is bad input, not a crash of the runtime.

@pytest.mark.parametrize("text", ['{"a": NaN}', '[Infinity]', '{"a": [1, -Infinity]}', "NaN"])
def test_nan_and_infinity_are_refused(text):
    for doc in (text, text.encode()):
        with pytest.raises(ValueError, match="not valid JSON"):
            jsonio.loads(doc)


def test_deep_nesting_is_a_value_error():
    for depth in (1000, 100_000):
        for text in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
            with pytest.raises(ValueError, match="nested too deeply"):
                jsonio.loads(text)
    assert jsonio.loads("[" * 100 + "]" * 100) == json.loads("[" * 100 + "]" * 100)
