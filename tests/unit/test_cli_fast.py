"""The argparse-free fast path for create/run/exec/start/state/kill/delete must read a command line exactly as
argparse does, and hand everything else to argparse."""
from __future__ import annotations

import sys

import pytest

from ocirun import cli

SAME = [
    ["state", "c1"],
    ["start", "c1"],
    ["--root", "/run/x", "state", "c1"],
    ["--root=/run/x", "--log", "/tmp/l.json", "--log-format", "json", "delete", "c1"],
    ["--debug", "delete", "--force", "c1"],
    ["delete", "-f", "c1"],
    ["kill", "c1"],
    ["kill", "c1", "9"],
    ["kill", "--all", "c1", "SIGTERM"],
    ["kill", "c1", "KILL", "-a"],
    ["--systemd-cgroup", "state", "c"],
    ["create", "c1"],
    ["create", "--bundle", "/b", "--pid-file=/p", "--console-socket", "/s", "c1"],
    ["--root", "/r", "create", "-b", "/b", "--no-pivot", "--no-new-keyring", "--preserve-fds", "2", "c1"],
    ["run", "c"],
    ["run", "-d", "--keep", "--bundle=/b", "c"],
    ["exec", "--process", "/p.json", "--detach", "--pid-file", "/pid", "c"],
    ["exec", "-t", "--console-socket", "/s", "-p", "/p.json", "c"],
    ["exec", "c", "ls", "-l", "--", "x"],
    ["exec", "-e", "A=1", "--env", "B=2", "--cwd", "/tmp", "-u", "1:1", "--no-new-privs", "c", "sh"],
    ["exec", "--ignore-paused", "--preserve-fds=1", "c", "--", "true"],
    ["exec", "c"],
]


@pytest.mark.parametrize("argv", SAME)
def test_fast_path_reads_like_argparse(argv):
    fast = cli._fast_parse(argv)
    assert fast is not None
    full = cli.build_parser(cli.invoked_command(argv)).parse_args(argv)
    for name, value in vars(full).items():
        if hasattr(fast, name) or name in ("force", "all", "signal", "id", "args"):
            assert getattr(fast, name) == value, name


@pytest.mark.parametrize("argv", [
    [], ["--version"], ["state"], ["state", "a", "b"], ["kill", "c", "9", "x"], ["delete", "--bogus", "c"],
    ["--log-format", "yaml", "state", "c"], ["list"], ["run"], ["create", "--preserve-fds", "x", "c"],
    ["create", "-bfoo", "c"], ["run", "--bund", "b", "c"], ["exec", "--cap", "CAP_KILL", "c", "true"],
    ["run", "--detach=yes", "c"], ["create", "c", "--pid-file"], ["run", "--pid-file", "--detach", "c"],
    ["exec", "--cwd", "-t", "c", "sh"], ["create", "--preserve-fds", "-1", "c"],
    ["--root"], ["state", "--", "c"],
])
def test_everything_else_goes_to_argparse(argv):
    assert cli._fast_parse(argv) is None


def test_fast_path_does_not_import_argparse():
    import subprocess
    code = ("import sys; from ocirun import cli; cli._fast_parse(['state', 'x']); "
            "print('argparse' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
