"""Hostile input (issue 13, items 3 and 11): what an attacker or a broken engine can put in a bundle
or a config.json must end in one line on stderr naming the file or the config field and the
reason — never a hang, a memory blow-up or `internal error: <PythonException>` — and leave
nothing behind.  runc runs the same scenario where it behaves well, for comparison.
"""
from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

import helpers
from helpers import make_bundle, one_line_error, read_config, run_ocirun, run_runc, write_config


QUICK = 10  # seconds: every command here answers at once or it hangs


def create_fails(bundle, root, cid="h1") -> str:
    r = run_ocirun("create", "-b", bundle, cid, root=root, timeout=QUICK)
    if r.returncode == 0:
        helpers.delete(root, cid, check=False)
    line = one_line_error(r)
    assert os.listdir(root) == [], os.listdir(root)
    return line


def write_raw(bundle, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    (bundle / "config.json").write_bytes(data)


# ============================================================================ item 3: the files we read

def _fifo(path):
    os.mkfifo(path)


def _dev_zero(path):
    os.symlink("/dev/zero", path)


def _directory(path):
    os.mkdir(path)


def _dangling(path):
    os.symlink("/nonexistent/config.json", path)


@pytest.mark.parametrize("make, reason", [
    (_fifo, "is a FIFO, not a regular file"),
    (_dev_zero, "is a character device, not a regular file"),
    (_directory, "is a directory, not a regular file"),
    (_dangling, "no such file or directory"),
])
def test_config_json_that_is_not_a_regular_file(ocirun_root, tmp_path, make, reason):
    """runc reads a FIFO forever and /dev/zero until its decoder gives up; we look first."""
    bundle = make_bundle(tmp_path, ["true"])
    config = bundle / "config.json"
    config.unlink()
    make(config)
    started = time.monotonic()
    line = create_fails(bundle, ocirun_root)
    assert time.monotonic() - started < 5
    assert line == f"config.json: {config}: {reason}", line


def test_config_json_too_large(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["true"])
    config = read_config(bundle)
    config["annotations"] = {"big": "x" * (16 << 20)}
    write_config(bundle, config)
    line = create_fails(bundle, ocirun_root)
    assert line.startswith(f"config.json: {bundle}/config.json: larger than 16 MiB"), line


def test_config_json_of_a_few_mib_is_fine(ocirun_root, tmp_path):
    """The cap is far above real configs (big seccomp profiles are ~100 KiB)."""
    bundle = make_bundle(tmp_path, ["true"], annotations={"big": "x" * (4 << 20)})
    r = run_ocirun("run", "-b", bundle, "big1", root=ocirun_root, timeout=30)
    assert r.returncode == 0, r.stderr


def test_exec_process_file_that_is_a_fifo(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["sleep", "60"])
    r = run_ocirun("run", "-d", "-b", bundle, "ex1", root=ocirun_root, timeout=30)
    assert r.returncode == 0, r.stderr
    try:
        fifo = tmp_path / "process.json"
        os.mkfifo(fifo)
        r = run_ocirun("exec", "--process", fifo, "ex1", root=ocirun_root, timeout=QUICK)
        assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
        assert r.returncode != 0
        assert r.stderr.strip().splitlines()[-1].endswith(f"--process: {fifo}: is a FIFO, not a regular file"), r.stderr
    finally:
        helpers.delete(ocirun_root, "ex1", check=False)


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "directory"])
def test_namespace_path_that_is_not_a_namespace(ocirun_root, tmp_path, kind):
    """runc blocks forever opening a FIFO given as a namespace path; we check its type first."""
    target = tmp_path / "ns"
    {"fifo": _fifo, "dev_zero": _dev_zero, "directory": _directory}[kind](target)
    bundle = make_bundle(tmp_path, ["true"])
    config = read_config(bundle)
    i = next(i for i, ns in enumerate(config["linux"]["namespaces"]) if ns["type"] == "network")
    config["linux"]["namespaces"][i]["path"] = str(target)
    write_config(bundle, config)
    line = create_fails(bundle, ocirun_root)
    assert line.startswith(f"linux.namespaces[{i}].path: {target}"), line
    assert "not a namespace" in line, line


# ============================================================================ item 11: values

def _set(config: dict, path: list, value) -> None:
    obj = config
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


STRING_FIELDS = [
    (["process", "args", 0], "process.args[0]"),
    (["process", "env", 0], "process.env[0]"),
    (["process", "cwd"], "process.cwd"),
    (["hostname"], "hostname"),
    (["mounts", 1, "options", 0], "mounts[1].options[0]"),
    (["linux", "maskedPaths", 0], "linux.maskedPaths[0]"),
    (["annotations"], "annotations"),  # in a key
]


@pytest.mark.parametrize("where, field", STRING_FIELDS, ids=[f for _, f in STRING_FIELDS])
@pytest.mark.parametrize("bad, reason", [
    ("\x00", "contains a NUL character"),
    ("\udcff", "contains a lone surrogate"),
], ids=["nul", "surrogate"])
def test_nul_and_lone_surrogates_in_strings(ocirun_root, tmp_path, where, field, bad, reason):
    bundle = make_bundle(tmp_path, ["true"])
    config = read_config(bundle)
    if where == ["annotations"]:
        config["annotations"] = {f"a{bad}b": "x"}
    else:
        obj = config
        for key in where[:-1]:
            obj = obj[key]
        obj[where[-1]] = "/x" + bad + "y" if field == "process.cwd" else "A=x" + bad + "y"
    write_config(bundle, config)  # json.dumps writes them as \u0000 and \udcff
    line = create_fails(bundle, ocirun_root)
    assert line.startswith(f"config.json: {field}: {reason}"), line


def test_umask_out_of_range(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["true"], process={"user": {"umask": 1 << 32}})
    assert "process.user.umask" in create_fails(bundle, ocirun_root)


def test_hook_timeout_too_large(ocirun_root, tmp_path):
    hook = {"path": "/bin/true", "timeout": 1 << 62}
    bundle = make_bundle(tmp_path, ["true"], hooks={"prestart": [hook]})
    line = create_fails(bundle, ocirun_root)
    assert line.startswith("hooks.prestart[0].timeout: 4611686018427387904 is too large"), line


def test_hook_timeout_of_thirty_days_works(ocirun_root, runc_root, tmp_path):
    """poll() takes at most 2**31-1 ms (~25 days): a longer timeout is waited for in steps."""
    hook = {"path": "/bin/true", "timeout": 30 * 86400}
    bundle = make_bundle(tmp_path, ["true"], hooks={"createRuntime": [hook]})
    for run, root in ((run_ocirun, ocirun_root), (run_runc, runc_root)):
        r = run("run", "-b", bundle, "ht1", root=root, timeout=30)
        assert r.returncode == 0, (run.__name__, r.stderr)


def test_too_many_additional_gids(ocirun_root, tmp_path):
    bundle = make_bundle(tmp_path, ["true"], process={"user": {"additionalGids": list(range(100_000))}})
    line = create_fails(bundle, ocirun_root)
    assert line == ("process.user.additionalGids: 100000 groups, more than the kernel's "
                    "NGROUPS_MAX (65536)"), line


def test_rlimit_as_too_small_to_start(ocirun_root, runc_root, tmp_path):
    """A 4 KiB address space cannot exec anything: runc's container dies of SIGSEGV at execve
    (runc run exits 139, silently); we say which limit killed it."""
    bundle = make_bundle(tmp_path, ["true"], process={"rlimits": [{"type": "RLIMIT_AS", "soft": 4096, "hard": 4096}]})
    r = run_runc("run", "-b", bundle, "as1", root=runc_root, timeout=30)
    assert r.returncode == 139, (r.returncode, r.stderr)
    r = run_ocirun("run", "-b", bundle, "as1", root=ocirun_root, timeout=30)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, r.stderr
    assert r.returncode != 0
    assert "process.rlimits[0]: RLIMIT_AS" in r.stderr, r.stderr
    assert os.listdir(ocirun_root) == []


def test_rlimit_as_of_a_few_mib_runs_as_with_runc(ocirun_root, runc_root, tmp_path):
    """The runtime's own process is bigger than the limit: it must set it last, right before
    the container's program replaces it (runc's Go init gets it from its parent)."""
    limit = 4 << 20
    bundle = make_bundle(tmp_path, ["true"], process={"rlimits": [{"type": "RLIMIT_AS", "soft": limit, "hard": limit}]})
    for run, root in ((run_runc, runc_root), (run_ocirun, ocirun_root)):
        r = run("run", "-b", bundle, "as2", root=root, timeout=30)
        assert r.returncode == 0, (run.__name__, r.stderr)


def _limit(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/limits") as f:
        return next(line.split()[len(name.split()) + 1] for line in f if line.startswith(name))


def test_memory_rlimits_are_set_at_execve(ocirun_root, tmp_path):
    """The init (Python) that waits for `start` is not held to the container's memory limits,
    which it would not fit in; the container's program and every exec'd one are."""
    limits = [{"type": "RLIMIT_AS", "soft": 64 << 20, "hard": 64 << 20},
              {"type": "RLIMIT_DATA", "soft": 32 << 20, "hard": 32 << 20},
              {"type": "RLIMIT_NOFILE", "soft": 100, "hard": 100}]
    bundle = make_bundle(tmp_path, ["sleep", "60"], process={"rlimits": limits})
    r = run_ocirun("create", "-b", bundle, "ml1", root=ocirun_root, timeout=30)
    assert r.returncode == 0, r.stderr
    try:
        pid = json.loads(run_ocirun("state", "ml1", root=ocirun_root).stdout)["pid"]
        assert _limit(pid, "Max address space") == "unlimited"
        assert _limit(pid, "Max data size") == "unlimited"
        assert _limit(pid, "Max open files") == "100"  # the others are set before
        assert run_ocirun("start", "ml1", root=ocirun_root).returncode == 0
        helpers.wait_until(lambda: _limit(pid, "Max address space") != "unlimited", 10,
                           "the started program's own limits")
        assert _limit(pid, "Max address space") == str(64 << 20)
        assert _limit(pid, "Max data size") == str(32 << 20)
        r = run_ocirun("exec", "ml1", "sh", "-c", "ulimit -v; ulimit -d", root=ocirun_root, timeout=30)
        assert r.returncode == 0 and r.stdout.split() == [str(64 << 10), str(32 << 10)], (r.stdout, r.stderr)
    finally:
        helpers.delete(ocirun_root, "ml1", check=False)


@pytest.mark.parametrize("text, reason", [
    ("[" * 1000 + "]" * 1000, "nested too deeply"),
    ('{"ociVersion": "1.2.0", "x": ' + "{\"a\": " * 5000 + "1" + "}" * 5000 + "}", "nested too deeply"),
    ('{"ociVersion": NaN}', "NaN is not valid JSON"),
    ('{"ociVersion": "1.2.0", "x": -Infinity}', "-Infinity is not valid JSON"),
])
def test_json_that_python_would_take_badly(ocirun_root, tmp_path, text, reason):
    bundle = make_bundle(tmp_path, ["true"])
    write_raw(bundle, text)
    line = create_fails(bundle, ocirun_root)
    assert line.startswith("config.json: invalid JSON: ") and reason in line, line


def test_no_space_left_in_the_state_root(tmp_path):
    """A full state filesystem is the kernel's ENOSPC, said as such, naming the file."""
    root = helpers.new_state_root()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k,mode=0700", "ocirun-test-nospc", root], check=True)
    try:
        with open(root / "filler", "wb") as f:
            try:
                f.write(b"\0" * 65536)
            except OSError:
                pass
        bundle = make_bundle(tmp_path, ["true"])
        for cmd in ("create", "run"):
            r = run_ocirun(cmd, "-b", bundle, "full1", root=root, timeout=30)
            line = one_line_error(r)
            assert f"{root}/full1" in line and line.endswith("no space left on device"), line
            assert sorted(os.listdir(root)) == ["filler"]
    finally:
        subprocess.run(["umount", root], check=True)
        os.rmdir(root)


# ============================================================================ item 11: the error line

def test_config_strings_in_errors_are_escaped(ocirun_root, tmp_path):
    """A config value echoed in the error must not reach the terminal raw: no escape sequence,
    no second line (also in --log, text and json, which engines copy to people's screens)."""
    evil = "/bin/\x1b]0;pwned\x07\x1b[2J\nforged line\r\u202e"
    bundle = make_bundle(tmp_path, [evil])
    for fmt in ("text", "json"):
        log = tmp_path / f"log.{fmt}"
        r = run_ocirun("--log", log, "--log-format", fmt, "run", "-b", bundle, "esc1", root=ocirun_root,
                       timeout=30)
        line = one_line_error(r)
        for raw in ("\x1b", "\x07", "\r", "\u202e"):
            assert raw not in r.stderr, r.stderr
        assert "\\x1b]0;pwned\\x07\\x1b[2J\\nforged line\\r\\u202e" in line, line
        logged = log.read_text().splitlines()
        assert len(logged) == 1, logged
        msg = json.loads(logged[0])["msg"] if fmt == "json" else logged[0]
        assert "\x1b" not in msg and "\\x1b]0;pwned" in msg, msg
        assert os.listdir(ocirun_root) == []


@pytest.mark.parametrize("value", ["99999999999", "-1"])
@pytest.mark.parametrize("command", ["create", "exec"])
def test_preserve_fds_out_of_range(ocirun_root, tmp_path, command, value):
    """A huge --preserve-fds once looped over billions of fds (a hang); a negative one was taken
    as 0 (runc's flag is unsigned).  Both are refused at once, before anything is made."""
    if command == "create":
        args = ["create", "--preserve-fds", value, "-b", str(make_bundle(tmp_path, ["true"])), "pf"]
    else:
        args = ["exec", "--preserve-fds", value, "pf", "true"]
    r = run_ocirun(*args, root=ocirun_root, timeout=20)
    assert r.returncode == (255 if command == "exec" else 1), (r.returncode, r.stderr)
    assert f"--preserve-fds {value}: must be between 0 and" in r.stderr, r.stderr
    assert not os.listdir(ocirun_root)


@pytest.mark.parametrize("command", ["create", "run", "exec"])
def test_preserve_fds_must_all_be_open(ocirun_root, tmp_path, command):
    """fds 3 and 4 not open in the caller (subprocess closes them): had ocirun gone on, its own
    fds (the exec stub, the channel to an exec'd process) would have filled those numbers and
    reached the container — a forgeable channel.  runc refuses such a range too."""
    log = tmp_path / "log"  # opened by ocirun, it must not be the fd 3 that makes the check pass
    if command == "exec":
        args = ["--log", log, "exec", "--preserve-fds", "2", "pf", "true"]
    else:
        args = ["--log", log, command, "--preserve-fds", "2", "-b", str(make_bundle(tmp_path, ["true"])), "pf"]
    r = run_ocirun(*args, root=ocirun_root, timeout=20)
    assert r.returncode == (255 if command == "exec" else 1), (r.returncode, r.stderr)
    assert "--preserve-fds 2: fd 3 is not open" in r.stderr, r.stderr
    assert "--preserve-fds 2: fd 3 is not open" in log.read_text()  # where an engine reads it
    assert not os.listdir(ocirun_root)


def test_update_resources_refuse_nan(ocirun_root, tmp_path):
    r = run_ocirun("update", "-r", "-", "nosuch", root=ocirun_root, input='{"pids": {"limit": NaN}}')
    assert r.returncode == 1 and "NaN" in r.stderr and "Traceback" not in r.stderr, r.stderr
