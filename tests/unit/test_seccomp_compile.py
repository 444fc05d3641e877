"""ocirun.seccomp without root: compiling real profiles, errors that name the JSON path, the cache.

Nothing here loads a filter; tests/integration/test_seccomp.py does (in forked children).
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

import helpers
from ocirun import seccomp
from ocirun.errors import ConfigError

FIXTURES = helpers.FIXTURES
REPO = Path(__file__).resolve().parents[2]


def fixture_profile(name: str) -> dict | None:
    doc = json.loads((FIXTURES / f"{name}-config.json").read_text())
    return doc.get("linux", {}).get("seccomp")


def deny_mkdir(**extra) -> dict:
    rule = {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}
    rule.update(extra)
    return {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [rule]}


def instructions(program: bytes) -> list[tuple[int, int, int, int]]:
    return [struct.unpack_from("=HBBI", program, i) for i in range(0, len(program), 8)]


# ---------------------------------------------------------------------------- real profiles


@pytest.mark.parametrize("name", ["docker", "podman", "podman-rich"])
def test_engine_profiles_compile(name):
    profile = fixture_profile(name)
    flt = seccomp.compile_filter(profile, cache_dir=None)
    assert len(flt.program) % 8 == 0
    assert 100 < len(flt.program) // 8 <= 4096       # BPF_MAXINSNS
    assert not flt.uses_notify and flt.flags == 0
    # Deny-by-default with EPERM: the ENOSYS stub is there, returning ERRNO|ENOSYS.
    rets = [k for code, _jt, _jf, k in instructions(flt.program) if code == 0x06]
    assert 0x00050000 | 38 in rets


def test_containerd_fixture_has_no_profile_and_none_is_compiled():
    # ctr runs without --seccomp here: the runtime must not invent a filter.
    assert fixture_profile("containerd") is None


def test_docker_profile_compiles_fast():
    import time
    profile = fixture_profile("docker")
    seccomp.compile_filter(profile, cache_dir=None)  # pyseccomp imported, libseccomp warm
    start = time.perf_counter()
    seccomp.compile_filter(profile, cache_dir=None)
    assert time.perf_counter() - start < 0.2


def test_unknown_syscall_names_are_skipped():
    profile = deny_mkdir()
    profile["syscalls"][0]["names"].append("no_such_syscall_at_all")
    known = seccomp.compile_filter(deny_mkdir(), cache_dir=None)
    with_unknown = seccomp.compile_filter(profile, cache_dir=None)
    assert with_unknown.program == known.program


def test_rule_with_the_default_action_is_skipped():
    profile = {"defaultAction": "SCMP_ACT_ALLOW",
               "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}]}
    bare = {"defaultAction": "SCMP_ACT_ALLOW"}
    assert seccomp.compile_filter(profile, cache_dir=None).program == \
        seccomp.compile_filter(bare, cache_dir=None).program


def test_errno_ret_lands_in_the_program():
    prog = seccomp.compile_filter(deny_mkdir(errnoRet=38), cache_dir=None).program
    rets = [k for code, _jt, _jf, k in instructions(prog) if code == 0x06]
    assert 0x00050000 | 38 in rets
    prog = seccomp.compile_filter(deny_mkdir(), cache_dir=None).program
    assert 0x00050000 | 1 in [k for code, _jt, _jf, k in instructions(prog) if code == 0x06]


@pytest.mark.parametrize("action,ret", [
    ("SCMP_ACT_KILL", 0), ("SCMP_ACT_KILL_THREAD", 0), ("SCMP_ACT_KILL_PROCESS", 0x80000000),
    ("SCMP_ACT_TRAP", 0x00030000), ("SCMP_ACT_TRACE", 0x7FF00000 | 1), ("SCMP_ACT_LOG", 0x7FFC0000),
    ("SCMP_ACT_NOTIFY", 0x7FC00000),
])
def test_every_action_compiles(action, ret):
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": action}]}
    flt = seccomp.compile_filter(profile, cache_dir=None)
    assert ret in [k for code, _jt, _jf, k in instructions(flt.program) if code == 0x06]
    assert flt.uses_notify == (action == "SCMP_ACT_NOTIFY")


def test_notify_asks_for_a_listener_and_drops_tsync():
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_TSYNC"],
               "listenerPath": "/run/agent.sock", "listenerMetadata": "m",
               "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]}
    flt = seccomp.compile_filter(profile, cache_dir=None)
    assert flt.flags == 8  # SECCOMP_FILTER_FLAG_NEW_LISTENER
    assert (flt.listener_path, flt.listener_metadata) == ("/run/agent.sock", "m")


def test_flags_map_to_seccomp2_flags():
    profile = deny_mkdir()
    profile["flags"] = ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
                        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]
    # WAIT_KILLABLE_RECV means nothing without a listener (and the kernel refuses it alone).
    assert seccomp.compile_filter(profile, cache_dir=None).flags == 2 | 4


def test_architectures_add_to_the_program():
    one = seccomp.compile_filter(deny_mkdir(), cache_dir=None).program
    profile = deny_mkdir()
    profile["architectures"] = ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    three = seccomp.compile_filter(profile, cache_dir=None).program
    assert len(three) > len(one)


def test_args_and_masked_eq_compile():
    profile = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["socket"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
                  {"index": 1, "value": 0xF, "valueTwo": 2, "op": "SCMP_CMP_MASKED_EQ"}]},
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"},
                  {"index": 0, "value": 0x20000, "op": "SCMP_CMP_EQ"}]},  # same index: split
    ]}
    for op in ("SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_GE", "SCMP_CMP_GT"):
        profile["syscalls"].append({"names": ["kill"], "action": "SCMP_ACT_ERRNO",
                                    "args": [{"index": 1, "value": 9, "op": op}]})
    assert seccomp.compile_filter(profile, cache_dir=None).program


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("mutate,path,words", [
    (lambda p: p["syscalls"][0].update(action="SCMP_ACT_FOO"),
     "linux.seccomp.syscalls[0].action", "unknown action 'SCMP_ACT_FOO'"),
    (lambda p: p.update(defaultAction="nope"), "linux.seccomp.defaultAction", "unknown action 'nope'"),
    (lambda p: p.pop("defaultAction"), "linux.seccomp.defaultAction", "is required"),
    (lambda p: p.update(architectures=["SCMP_ARCH_X86_64", "SCMP_ARCH_Z80"]),
     "linux.seccomp.architectures[1]", "unknown architecture 'SCMP_ARCH_Z80'"),
    (lambda p: p.update(flags=["SECCOMP_FILTER_FLAG_MAGIC"]),
     "linux.seccomp.flags[0]", "unknown flag 'SECCOMP_FILTER_FLAG_MAGIC'"),
    (lambda p: p["syscalls"][0].update(names=[]), "linux.seccomp.syscalls[0].names", "non-empty"),
    (lambda p: p["syscalls"][0].update(action="SCMP_ACT_ALLOW", errnoRet=1),
     "linux.seccomp.syscalls[0].errnoRet", "takes no errno"),
    (lambda p: p.update(defaultAction="SCMP_ACT_KILL", defaultErrnoRet=1),
     "linux.seccomp.defaultErrnoRet", "takes no errno"),
    (lambda p: p["syscalls"][0].update(errnoRet=-1), "linux.seccomp.syscalls[0].errnoRet", "errno number"),
    (lambda p: p["syscalls"][0].update(args=[{"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]),
     "linux.seccomp.syscalls[0].args[0].index", "0..5"),
    (lambda p: p["syscalls"][0].update(args=[{"index": 0, "value": 1 << 64, "op": "SCMP_CMP_EQ"}]),
     "linux.seccomp.syscalls[0].args[0].value", "64-bit"),
    (lambda p: p["syscalls"][0].update(args=[{"index": 0, "value": 1, "op": "SCMP_CMP_ABOUT"}]),
     "linux.seccomp.syscalls[0].args[0].op", "unknown operator 'SCMP_CMP_ABOUT'"),
    (lambda p: p.update(listenerMetadata="x"), "linux.seccomp.listenerMetadata", "without listenerPath"),
    (lambda p: p.update(defaultAction="SCMP_ACT_NOTIFY"), "linux.seccomp.defaultAction", "NOTIFY"),
    (lambda p: p["syscalls"].append({"names": ["sendmsg"], "action": "SCMP_ACT_NOTIFY"}),
     "linux.seccomp.syscalls[1].action", "sendmsg"),
])
def test_errors_name_the_json_path(mutate, path, words):
    profile = deny_mkdir()
    mutate(profile)
    with pytest.raises(ConfigError) as e:
        seccomp.compile_filter(profile, cache_dir=None)
    assert e.value.path == path
    assert words in str(e.value)
    assert str(e.value).startswith(path + ": ")


def test_error_path_follows_json_path_argument():
    with pytest.raises(ConfigError, match=r"^process\.seccomp\.syscalls\[0\]\.action: unknown action"):
        seccomp.compile_filter({"defaultAction": "SCMP_ACT_ALLOW",
                                "syscalls": [{"names": ["x"], "action": "bad"}]},
                               json_path="process.seccomp", cache_dir=None)


# ---------------------------------------------------------------------------- cache


def test_cache_hit_returns_the_same_program(tmp_path):
    cache = str(tmp_path / "cache")
    profile = fixture_profile("docker")
    first = seccomp.compile_filter(profile, cache_dir=cache)
    assert not first.from_cache
    files = os.listdir(cache)
    assert len(files) == 1 and files[0].endswith(".bpf")
    assert (os.stat(cache).st_mode & 0o777) == 0o700
    second = seccomp.compile_filter(json.loads(json.dumps(profile)), cache_dir=cache)
    assert second.from_cache
    assert second.program == first.program


def test_cache_key_ignores_key_order_but_not_content(tmp_path):
    cache = str(tmp_path / "cache")
    seccomp.compile_filter({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}, cache_dir=cache)
    again = seccomp.compile_filter({"syscalls": [{"action": "SCMP_ACT_ERRNO", "names": ["mkdir"]}],
                                    "defaultAction": "SCMP_ACT_ALLOW"}, cache_dir=cache)
    assert again.from_cache
    other = seccomp.compile_filter(deny_mkdir(errnoRet=5), cache_dir=cache)
    assert not other.from_cache
    assert len(os.listdir(cache)) == 2


def test_cache_in_an_untrusted_directory_is_not_used(tmp_path):
    cache = tmp_path / "cache"
    seccomp.compile_filter(deny_mkdir(), cache_dir=str(cache))
    os.chmod(cache, 0o777)
    assert not seccomp.compile_filter(deny_mkdir(), cache_dir=str(cache)).from_cache


def test_corrupt_cache_entry_is_recompiled(tmp_path):
    cache = tmp_path / "cache"
    good = seccomp.compile_filter(deny_mkdir(), cache_dir=str(cache)).program
    (entry,) = cache.iterdir()
    entry.write_bytes(b"short")
    again = seccomp.compile_filter(deny_mkdir(), cache_dir=str(cache))
    assert not again.from_cache and again.program == good


def test_cache_hit_and_module_import_do_not_import_pyseccomp(tmp_path):
    cache = str(tmp_path / "cache")
    profile_json = json.dumps(fixture_profile("docker"))
    seccomp.compile_filter(json.loads(profile_json), cache_dir=cache)
    code = (
        "import json, sys\n"
        "from ocirun import seccomp\n"
        "assert 'pyseccomp' not in sys.modules, 'import'\n"
        f"f = seccomp.compile_filter(json.loads({profile_json!r}), cache_dir={cache!r})\n"
        "assert f.from_cache\n"
        "assert 'pyseccomp' not in sys.modules, 'hit'\n"
    )
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------------- listener payload


def test_listener_payload_is_a_container_process_state():
    state = {"ociVersion": "1.2.0", "id": "c1", "status": "creating", "pid": 42, "bundle": "/b"}
    doc = json.loads(seccomp.listener_payload(state, 42, "MKNOD=/dev/null", "1.2.0"))
    assert doc == {"ociVersion": "1.2.0", "fds": ["seccompFd"], "pid": 42,
                   "metadata": "MKNOD=/dev/null", "state": state}
    assert "metadata" not in json.loads(seccomp.listener_payload(state, 42, None, "1.2.0"))


def test_features_lists_what_compile_accepts():
    f = seccomp.features()
    assert f["enabled"] is True
    assert "SCMP_ACT_NOTIFY" in f["actions"] and "SCMP_CMP_MASKED_EQ" in f["operators"]
    assert "SCMP_ARCH_X86_64" in f["archs"]
    assert set(f["supportedFlags"]) <= set(f["knownFlags"])
    assert "SECCOMP_FILTER_FLAG_LOG" in f["supportedFlags"]  # any kernel since 4.14
