"""ocirun.docs: the completion scripts and man pages cover every command and flag of cli.py's table.

The tests walk the table itself, so a command added to it later (checkpoint, restore, ...) is
checked without a change here; `test_a_new_command_needs_no_change_to_docs` proves that.  The
bash script is run for real (bash is everywhere); zsh and man only check syntax and rendering
where those programs are installed.
"""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess

import pytest

from ocirun import cli, docs

COMMANDS = list(cli.SUBCOMMANDS)


def _entries():
    """('' for the globals, or a command name) with its table entry."""
    return [("", cli.GLOBALS)] + list(cli.SUBCOMMANDS.items())


def _flag_names(entry) -> list[str]:
    _help, flags, argparse_only, _positionals, _fast = entry
    return [name for names, *_rest in flags + argparse_only for name in names]


def _choice_flags(entry):
    _help, flags, argparse_only, _positionals, _fast = entry
    return [(name, kind) for names, _dest, kind, _d, _t in flags + argparse_only if isinstance(kind, tuple)
            for name in names]


# --------------------------------------------------------------------------- bash

def _bash_complete(lines: list[list[str]], script: str | None = None) -> list[set[str]]:
    """_ocirun's COMPREPLY for each command line, whose last word is the one being completed."""
    driver = [script or docs.bash_completion(),
              'c() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _ocirun; echo "${COMPREPLY[*]}"; }']
    driver += ["c " + " ".join(shlex.quote(w) for w in words) for words in lines]
    r = subprocess.run(["bash", "--norc", "--noprofile", "-c", "\n".join(driver)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    out = r.stdout.split("\n")[:-1]
    assert len(out) == len(lines), r.stdout
    return [set(line.split()) for line in out]


def test_bash_completion_parses():
    r = subprocess.run(["bash", "-n"], input=docs.bash_completion(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_bash_completes_every_command_and_every_flag():
    lines = [["ocirun", ""]] + [["ocirun", *([command] if command else []), "-"] for command, _e in _entries()]
    got = _bash_complete(lines)
    assert got[0] == set(COMMANDS)
    for (command, entry), offered in zip(_entries(), got[1:], strict=True):
        assert offered == set(_flag_names(entry)), command or "global flags"


def test_bash_completes_the_values_of_choice_flags():
    cases = [(command, name, kind) for command, entry in _entries() for name, kind in _choice_flags(entry)]
    assert cases  # --log-format, --format at least
    lines = [["ocirun", *([command] if command else []), name, ""] for command, name, _k in cases]
    lines += [["ocirun", *([command] if command else []), name, "=", ""] for command, name, _k in cases]
    got = _bash_complete(lines)
    for (command, name, kind), offered in zip(cases + cases, got, strict=True):
        assert offered == set(kind), (command, name)


def test_bash_completes_ids_from_the_root_given(tmp_path):
    fake = tmp_path / "fake-ocirun"
    calls = tmp_path / "calls"
    fake.write_text(f'#!/bin/sh\necho "$*" >> {shlex.quote(str(calls))}\nprintf "alpha\\nbeta\\n"\n')
    fake.chmod(0o755)
    got = _bash_complete([[str(fake), "--root", "/run/x", "kill", "al"],
                          [str(fake), "--root=/run/y", "delete", "--force", ""],
                          [str(fake), "kill", "alpha", "SIGKI"]])
    assert got == [{"alpha"}, {"alpha", "beta"}, {"SIGKILL"}]
    assert calls.read_text().splitlines() == ["--root /run/x list -q", "--root /run/y list -q"]


def test_bash_completes_paths_after_a_path_flag(tmp_path):
    (tmp_path / "bundle-one").mkdir()
    got = _bash_complete([["ocirun", "create", "--bundle", str(tmp_path / "bun")]])
    assert got == [{str(tmp_path / "bundle-one")}]


# --------------------------------------------------------------------------- zsh

def _zsh_function(script: str, name: str) -> str:
    m = re.search(rf"^{re.escape(name)}\(\) {{\n(.*?)^}}$", script, re.M | re.S)
    assert m, f"{name} not in the zsh script"
    return m.group(1)


def test_zsh_completion_names_every_command_and_flag():
    script = docs.zsh_completion()
    assert script.startswith("#compdef ocirun\n")
    main = _zsh_function(script, "_ocirun")
    for command, entry in _entries():
        body = _zsh_function(script, f"_ocirun_cmd_{command}") if command else main
        if command:
            assert f"'{command}:" in main and f"({command}) _ocirun_cmd_{command} ;;" in main
        for name in _flag_names(entry):
            assert re.search(rf"[')*]{re.escape(name)}\[", body), (command, name)


def test_zsh_completion_parses():
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed (.ci/run installs it)")
    r = subprocess.run(["zsh", "-n"], input=docs.zsh_completion(), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


# --------------------------------------------------------------------------- man pages

def _roff_flag(name: str) -> str:
    return r"\fB" + name.replace("-", r"\-") + r"\fR"


def test_a_man_page_per_command_with_every_flag(tmp_path):
    assert docs.main(["man", str(tmp_path)]) == 0
    pages = {p.name: p.read_text() for p in tmp_path.iterdir()}
    assert set(pages) == {"ocirun.8"} | {f"ocirun-{c}.8" for c in COMMANDS}
    main = pages["ocirun.8"]
    for command, entry in _entries():
        page = pages[f"ocirun-{command}.8"] if command else main
        if command:
            assert _roff_flag(command) in main and rf"\fBocirun\-{command}\fR(8)" in main
            assert page.startswith('.\\"') and f".TH OCIRUN\\-{command.upper()} 8" in page
        for name in _flag_names(entry):
            assert _roff_flag(name) in page, (command or "ocirun.8", name)
        for name, *_rest in entry[3]:
            assert rf"\fI{name}\fR" in page, (command, name)


def test_man_pages_render_without_warnings(tmp_path):
    if shutil.which("man") is None:
        pytest.skip("man is not installed")
    docs.write_man_pages(str(tmp_path))
    for command, entry in _entries():
        page = tmp_path / (f"ocirun-{command}.8" if command else "ocirun.8")
        r = subprocess.run(["man", "--warnings", "-l", str(page)], capture_output=True, text=True, timeout=30,
                           env={"PATH": "/usr/bin:/bin", "LC_ALL": "C", "MANWIDTH": "100", "MANPAGER": "cat"})
        assert r.returncode == 0 and r.stderr == "", (page.name, r.stderr)
        for name in _flag_names(entry):  # a flag copied from the rendered page is the flag
            assert re.search(rf"(^|[\s,]){re.escape(name)}\b", r.stdout, re.M), (page.name, name)


# --------------------------------------------------------------------------- the table grows

def test_a_new_command_needs_no_change_to_docs(monkeypatch, tmp_path):
    flag = (("--image-path",), "image_path", "str", None, "where the checkpoint's files go")
    monkeypatch.setitem(cli.SUBCOMMANDS, "frobnicate",
                        ("checkpoint a container", (flag,), (), (("id", "1", None, "the container's id"),), False))
    assert _bash_complete([["ocirun", "frob"], ["ocirun", "frobnicate", "--im"]]) == [{"frobnicate"}, {"--image-path"}]
    assert "_ocirun_cmd_frobnicate() {" in docs.zsh_completion()
    assert _roff_flag("--image-path") in docs.man_pages()["ocirun-frobnicate.8"]


def test_usage_error(capsys):
    assert docs.main(["completion", "fish"]) == 2
    assert "usage: python -m ocirun.docs" in capsys.readouterr().err
