"""The generated schema validator checks the schema's patterns with plain character rules
(ocirun/schema.py _PATTERN_RULES) instead of `re`: each rule must agree with the regular
expression it stands for, on the strings configs carry and on random ones."""
from __future__ import annotations

import random
import re

import pytest

from ocirun import _schema_compiled

SEEDS = ["", "RLIMIT_", "RLIMIT_NOFILE", "RLIMIT_nofile", "RLIMIT_A\n", "RLIMIT_A\u00c4", "RLIMIT_1",
         "0-3", "0-3\n", "0,1 -2", "1x", "2MB", "1GB", "0MB", "10KB", "1B", "1TB", "MB", "MB:", "MB:0=20",
         "MB:\n", "MB:x\ny", "\n", "\n\n", "a", "\na", "c", "b", "u", "p", "cc", "c\n", "x", "12",
         "1\u00b2MB", "1\u0663MB", "\u0663"]
ALPHABET = "RLIMIT_ABCZa019, -MBKG:\nxcbup\u00b2\u0663"


def _samples() -> list[str]:
    rng = random.Random(1)
    out = list(SEEDS)
    for _ in range(3000):
        tail = "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 8)))
        out += [tail, "RLIMIT_" + tail, "MB:" + tail, rng.choice("123456789") + tail]
    return out


@pytest.mark.parametrize("key", sorted(_schema_compiled.REGEX_PATTERNS))
def test_rule_agrees_with_the_regex(key):
    pattern = _schema_compiled.REGEX_PATTERNS[key]
    assert pattern.rule is not None, f"no character rule for {key!r}: it would import re"
    regex = re.compile(pattern.source)
    wrong = [s for s in _samples() if bool(pattern.search(s)) != bool(regex.search(s))]
    assert wrong == []


def test_an_unknown_pattern_falls_back_to_re():
    p = _schema_compiled._Pattern("^a+b\\Z")
    assert p.rule is None
    assert p.search("aab") and not p.search("ab\n") and not p.search("b")
