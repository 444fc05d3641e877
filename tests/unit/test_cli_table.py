"""The CLI table (`cli.SUBCOMMANDS`, `cli.GLOBALS`) is the one declaration of every flag: walk each
command and each flag, in each form, through both parsers derived from it and require the same
result.  The fast parser may decline (argparse then decides); for a flag the table gives the fast
parser it must not decline the forms engines write, and for an argparse-only flag it must."""
from __future__ import annotations

import pytest

from ocirun import cli

KINDS = ("bool", "str", "int", "list", "ints")
VALUES = {"str": ["v1", "-", "a=b"], "int": ["3", "0"], "list": ["x1", "y=2"], "ints": ["4", "5"]}


def _flags(command):
    """(flag record, whether the fast parser should read it) for every flag of a table entry."""
    _help, flags, argparse_only, _positionals, fast = command
    return [(f, fast) for f in flags] + [(f, False) for f in argparse_only]


def _positionals(command, full: bool = False) -> list[str]:
    """Values for the command's positionals: the required ones; with `full` every one."""
    out = []
    for name, arity, _default, _text in command[3]:
        if arity == "1":
            out.append(f"{name}-value")
        elif full and arity == "?":
            out.append("KILL")
        elif full and arity == "...":
            out += ["sh", "-c", "--x"]
    return out


def _argparse(argv: list[str]) -> dict:
    return vars(cli.build_parser(cli.invoked_command(argv)).parse_args(argv))


def _both(argv: list[str], fast_reads: bool) -> dict:
    """argparse's result; the fast parser's must be the same, or absent where it may decline."""
    full = _argparse(argv)
    fast = cli._fast_parse(argv)
    if fast_reads:
        assert fast is not None, f"the fast parser declined {argv}"
    else:
        assert fast is None, f"the fast parser read {argv}, which the table leaves to argparse"
    if fast is not None:
        assert vars(fast) == full, argv
    return full


def _forms(names, kind) -> list[tuple[list[str], object]]:
    """(flag tokens, the value argparse should store) for each way of writing the flag."""
    out = []
    for name in names:
        if kind == "bool":
            out.append(([name], True))
            continue
        values = list(kind) if isinstance(kind, tuple) else VALUES[kind]
        for v in values:
            typed = int(v) if kind in ("int", "ints") else v
            if v.startswith("-") and v != "-":
                continue
            stored = [typed] if kind in ("list", "ints") else typed
            out.append(([name, v], stored))
            out.append(([f"{name}={v}"], stored))
        if kind in ("list", "ints"):  # repeatable: every value, in order
            out.append(([name, values[0], name, values[1]],
                        [int(v) if kind == "ints" else v for v in values[:2]]))
    return out


COMMAND_FLAGS = [(cmd, flag, fast) for cmd, entry in cli.SUBCOMMANDS.items() for flag, fast in _flags(entry)]


def test_the_table_is_well_formed():
    assert set(cli.SUBCOMMANDS) == set(cli.COMMANDS)
    for name, entry in [("(globals)", cli.GLOBALS), *cli.SUBCOMMANDS.items()]:
        assert len(entry) == 5 and isinstance(entry[0], str) and isinstance(entry[4], bool), name
        seen = set()
        for (names, dest, kind, default, text), _fast in _flags(entry):
            assert names and all(n.startswith("-") for n in names) and names[0].startswith("--"), (name, names)
            assert not seen & set(names), (name, names)
            seen |= set(names)
            assert dest.isidentifier() and text, (name, names)
            assert kind in KINDS or (isinstance(kind, tuple) and default in kind), (name, names)
            assert default == {"bool": False, "list": None, "ints": None}.get(kind, default), (name, names)
            if kind == "int":
                assert isinstance(default, int), (name, names)
        arities = [arity for _n, arity, _d, _t in entry[3]]
        assert all(a in ("1", "?", "...") for a in arities), name
        assert "..." not in arities[:-1], name  # only the last one takes the rest of the line
        if entry[4]:
            assert not ("?" in arities and "..." in arities), name  # the fast parser could not tell them apart


@pytest.mark.parametrize("cmd", sorted(cli.SUBCOMMANDS))
def test_defaults(cmd):
    entry = cli.SUBCOMMANDS[cmd]
    full = _both([cmd, *_positionals(entry)], entry[4])
    for (_names, dest, kind, default, _text), _fast in _flags(entry):
        assert full[dest] == ([] if kind in ("list", "ints") else default), (cmd, dest)
    for name, arity, default, _text in entry[3]:
        if arity != "1":
            assert full[name] == ([] if arity == "..." else default), (cmd, name)
    own = {f[1] for f, _fast in _flags(entry)}
    for (_names, dest, _kind, default, _text), _fast in _flags(cli.GLOBALS):
        if dest not in own:  # `spec --rootless` (a bool) shadows the global `--rootless X`, as in runc
            assert full[dest] == default, dest
    assert full["command"] == cmd


@pytest.mark.parametrize("cmd,flag,fast", COMMAND_FLAGS, ids=[f"{c}{f[0][0]}" for c, f, _ in COMMAND_FLAGS])
def test_every_flag_in_every_form(cmd, flag, fast):
    names, dest, kind, _default, _text = flag
    entry = cli.SUBCOMMANDS[cmd]
    for tokens, stored in _forms(names, kind):
        for argv in ([cmd, *tokens, *_positionals(entry)],
                     ["--root", "/r", cmd, *tokens, *_positionals(entry, full=True)]):
            assert _both(argv, fast)[dest] == stored, argv


@pytest.mark.parametrize("flag,fast", _flags(cli.GLOBALS), ids=[f[0][0] for f, _ in _flags(cli.GLOBALS)])
def test_every_global_flag_in_every_form(flag, fast):
    names, dest, kind, _default, _text = flag
    for tokens, stored in _forms(names, kind):
        for argv in ([*tokens, "state", "c1"], [*tokens, "--debug", "exec", "-t", "c1", "ls", "-l"]):
            assert _both(argv, fast)[dest] == stored, argv
        assert cli._fast_parse(tokens) is None  # no command: argparse says so (or prints the version)


@pytest.mark.parametrize("cmd,flag", [(c, f) for c, f, _ in COMMAND_FLAGS if f[2] == "bool"])
def test_a_value_given_to_a_bool_flag_is_a_usage_error(cmd, flag):
    argv = [cmd, f"{flag[0][0]}=1", *_positionals(cli.SUBCOMMANDS[cmd])]
    assert cli._fast_parse(argv) is None
    with pytest.raises(cli.UsageError):
        _argparse(argv)


@pytest.mark.parametrize("cmd,flag", [(c, f) for c, f, _ in COMMAND_FLAGS if f[2] in ("int", "ints")
                                      or isinstance(f[2], tuple)])
def test_a_bad_int_or_choice_goes_to_argparse_which_refuses_it(cmd, flag):
    argv = [cmd, flag[0][0], "bogus", *_positionals(cli.SUBCOMMANDS[cmd])]
    assert cli._fast_parse(argv) is None
    with pytest.raises(cli.UsageError):
        _argparse(argv)


@pytest.mark.parametrize("argv,dest,value", [
    (["exec", "c1", "ls", "-l", "--", "x"], "args", ["ls", "-l", "--", "x"]),
    (["exec", "-t", "c1", "--", "-t"], "args", ["-t"]),
    (["exec", "c1", "-e", "A=1"], "args", ["-e", "A=1"]),  # after the id: the command's, not ours
    (["exec", "c1"], "args", []),
    (["ps", "c1", "-e", "-o", "pid"], "ps_args", ["-e", "-o", "pid"]),
    (["ps", "--format", "json", "c1"], "ps_args", []),
    (["kill", "c1", "KILL", "-a"], "all", True),
])
def test_the_rest_of_the_line(argv, dest, value):
    assert _both(argv, cli.SUBCOMMANDS[argv[0]][4])[dest] == value


def test_invoked_command_skips_the_value_of_every_global_flag_that_takes_one():
    for (names, _dest, kind, _default, _text), _fast in _flags(cli.GLOBALS):
        for name in names:
            expected = "list" if kind != "bool" else "state"
            assert cli.invoked_command([name, "state", "list"]) == expected, name


def test_log_flags_read_what_argparse_refused():
    assert cli._log_flags(["--log", "/l", "--log-format=json", "bogus", "--x"]) == ("/l", "json")
    assert cli._log_flags(["--log=/l", "--log-format", "yaml", "state"]) == ("/l", "text")
    assert cli._log_flags(["state"]) == (None, "text")


def test_exec_fails_with_255_and_preserve_fds_is_range_checked(tmp_path, capsys):
    assert cli.main(["--root", str(tmp_path), "exec", "--preserve-fds=-1", "c1", "true"]) == 255
    err = capsys.readouterr().err
    assert "exec failed: --preserve-fds -1: must be between 0 and" in err
    assert cli.main(["--root", str(tmp_path), "exec"]) == 1  # a usage error is not exec's own failure
