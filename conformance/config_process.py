"""config.md "Process" (and its POSIX / Linux parts): args, env, cwd, user and groups, umask,
capabilities, rlimits, noNewPrivileges, oomScoreAdj, terminal and consoleSize, scheduler,
ioPriority, and the LSM fields, which skip on hosts without the LSM."""
from __future__ import annotations

import ctypes
import os

from .framework import MUST, SHOULD, Fail, check
from .trial import LEAK_MARKER

C = "config.md"


def status_field(text: str, key: str) -> str:
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return line.split(":", 1)[1].strip()
    raise Fail(f"/proc/self/status has no {key} line: {text[:200]!r}")


@check("process.args", C, "Process", MUST,
       "process.args is the argv, with args[0] looked up in PATH (execvp semantics)")
def args(t):
    out = t.sh('printf "%s|%s|%s|" "$0" "$1" "$2"', process={"args": [
        "sh", "-c", 'printf "%s|%s|%s|" "$0" "$1" "$2"', "zero", "one two", ""]})
    t.expect_eq(out, "zero|one two||", "argv seen by the program")


@check("process.env", C, "Process", MUST,
       "process.env is the program's environment, and the runtime's own environment does not leak in")
def env(t):
    out = t.sh("env", process={"env": ["PATH=/bin", "FOO=bar baz", "EMPTY="]})
    lines = set(out.splitlines())
    for want in ("PATH=/bin", "FOO=bar baz", "EMPTY="):
        t.expect(want in lines, f"{want!r} missing from the environment: {sorted(lines)}")
    t.expect(LEAK_MARKER not in lines, "the runtime's own environment leaked into the container")


@check("process.cwd", C, "Process", MUST, "process.cwd is the working directory")
def cwd(t):
    t.expect_eq(t.sh("pwd", process={"cwd": "/home/test"}).strip(), "/home/test", "pwd")


@check("process.user.uid-gid", C, "User", MUST, "user.uid and user.gid are the process's ids")
def uid_gid(t):
    out = t.sh("id -u; id -g; grep -E '^(Uid|Gid)' /proc/self/status",
               process={"user": {"uid": 1000, "gid": 100}})
    lines = out.splitlines()
    t.expect_eq(lines[:2], ["1000", "100"], "id -u / id -g")
    t.expect(set(lines[2].split()[1:]) == {"1000"} and set(lines[3].split()[1:]) == {"100"},
             f"real/effective/saved ids differ: {lines[2:]}")


@check("process.user.additionalGids", C, "User", MUST,
       "user.additionalGids are the supplementary groups")
def additional_gids(t):
    out = t.sh("grep ^Groups /proc/self/status",
               process={"user": {"uid": 1000, "gid": 1000, "additionalGids": [100, 4242]}})
    groups = set(out.split(":", 1)[1].split())
    t.expect({"100", "4242"} <= groups, f"Groups: {sorted(groups)}")


@check("process.user.umask", C, "User", MUST, "user.umask is the process's umask")
def umask(t):
    out = t.sh("umask", process={"user": {"uid": 0, "gid": 0, "umask": 0o027}})
    t.expect_eq(out.strip(), "0027", "umask")


# A non-root user with ambient capabilities: the only arrangement in which every set survives
# execve unchanged (for uid 0 the kernel fills permitted/effective from the bounding set).
CAPS = {"bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_RAW"],
        "permitted": ["CAP_CHOWN", "CAP_KILL"],
        "effective": ["CAP_CHOWN", "CAP_KILL"],
        "inheritable": ["CAP_CHOWN", "CAP_KILL"],
        "ambient": ["CAP_CHOWN", "CAP_KILL"]}


@check("process.capabilities.sets", C, "Linux Process", MUST,
       "the five capability sets are exactly as configured")
def cap_sets(t):
    from .host import cap_mask
    out = t.sh("grep ^Cap /proc/self/status", process={"capabilities": CAPS, "noNewPrivileges": False,
                                                               "user": {"uid": 1000, "gid": 1000}})
    got = {line.split(":")[0]: int(line.split(":")[1], 16) for line in out.splitlines()}
    for key, field in (("bounding", "CapBnd"), ("permitted", "CapPrm"), ("effective", "CapEff"),
                       ("inheritable", "CapInh"), ("ambient", "CapAmb")):
        t.expect_eq(hex(got.get(field, -1)), hex(cap_mask(CAPS[key])), f"{field} ({key})")


@check("process.capabilities.unknown-logged", C, "Linux Process", MUST,
       "a capability the runtime cannot map is logged (warning or error) by name")
def cap_unknown_logged(t):
    c = t.container(args=["true"], process={"capabilities": {k: ["CAP_KILL", "CAP_CONFORMANCE_BOGUS"]
                                                            for k in ("bounding", "permitted", "effective")}})
    r = c.create(check=False)
    text = r.stderr
    if r.returncode == 0:
        c.start(check=False)
        text += c.errors()
    t.expect("CAP_CONFORMANCE_BOGUS" in text, f"nothing names the unknown capability: {text.strip()[:200]!r}")


@check("process.capabilities.unknown-not-fatal", C, "Linux Process", SHOULD,
       "a capability the runtime cannot map does not stop the container (runtimes SHOULD NOT fail)")
def cap_unknown_not_fatal(t):
    out = t.sh("grep ^CapEff /proc/self/status", process={"capabilities": {
        k: ["CAP_KILL", "CAP_CONFORMANCE_BOGUS"] for k in ("bounding", "permitted", "effective")}})
    t.expect(out.startswith("CapEff"), "container did not run")


@check("process.capabilities.ungrantable-not-fatal", C, "Linux Process", SHOULD,
       "a capability missing from the host's bounding set does not stop the container")
def cap_ungrantable(t):
    missing = sorted(set(__import__("conformance.host", fromlist=["x"]).CAP_NAMES) - t.host.bounding_caps())
    t.require(bool(missing), "the host's bounding set has every capability; nothing is ungrantable")
    cap = missing[0]
    out = t.sh("grep ^CapBnd /proc/self/status", process={"capabilities": {
        k: ["CAP_KILL", cap] for k in ("bounding", "permitted", "effective")}})
    t.expect(out.startswith("CapBnd"), f"container with {cap} did not run")


@check("process.rlimits", C, "POSIX process", MUST,
       "each rlimit's soft and hard values are what getrlimit returns in the container")
def rlimits(t):
    out = t.sh("ulimit -Sn; ulimit -Hn; ulimit -Ss; ulimit -Hs", process={"rlimits": [
        {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1000},
        {"type": "RLIMIT_STACK", "soft": 4096 * 1024, "hard": 8192 * 1024}]})
    t.expect_eq(out.split(), ["512", "1000", "4096", "8192"], "nofile soft/hard, stack soft/hard (KiB)")


@check("process.rlimits.unknown-type", C, "POSIX process", MUST,
       "an rlimit type that maps to no kernel limit is an error")
def rlimit_unknown(t):
    c = t.container(args=["true"], process={"rlimits": [{"type": "RLIMIT_CONFORMANCE", "soft": 1, "hard": 1}]})
    r = c.create(check=False)
    if r.returncode == 0:
        r = c.start(check=False)
        if r.returncode == 0:
            c.wait_status("stopped")
            raise Fail("create and start both accepted RLIMIT_CONFORMANCE")


@check("process.rlimits.unsatisfiable", C, "POSIX process", MUST,
       "an rlimit above the host's hard limit, without CAP_SYS_RESOURCE, is an error")
def rlimit_unsatisfiable(t):
    t.require(not t.host.has_bounding_cap("CAP_SYS_RESOURCE"),
              "the host's bounding set has CAP_SYS_RESOURCE, so any rlimit can be raised")
    hard = t.host.nofile_hard() + 1000
    c = t.container(args=["sh", "-c", "ulimit -Hn"], process={"rlimits": [
        {"type": "RLIMIT_NOFILE", "soft": hard, "hard": hard}]})
    r = c.create(check=False)
    if r.returncode == 0 and c.start(check=False).returncode == 0:
        c.wait_status("stopped")
        got = c.output().strip()
        t.expect(got == str(hard), f"no error, and the container's hard limit is {got} instead of {hard}")


@check("process.noNewPrivileges", C, "Linux Process", MUST,
       "noNewPrivileges true sets no_new_privs; false leaves it clear")
def no_new_privs(t):
    on = t.sh("grep ^NoNewPrivs /proc/self/status", process={"noNewPrivileges": True})
    off = t.sh("grep ^NoNewPrivs /proc/self/status", process={"noNewPrivileges": False})
    t.expect_eq((on.split()[-1], off.split()[-1]), ("1", "0"), "NoNewPrivs with true, with false")


@check("process.oomScoreAdj.set", C, "Linux Process", MUST, "oomScoreAdj is written to oom_score_adj")
def oom_set(t):
    t.expect_eq(t.sh("cat /proc/self/oom_score_adj", process={"oomScoreAdj": 345}).strip(), "345", "oom_score_adj")


@check("process.oomScoreAdj.unset", C, "Linux Process", MUST,
       "without oomScoreAdj the runtime does not change oom_score_adj")
def oom_unset(t):
    def raise_own():
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("123")
    c = t.container(args=["cat", "/proc/self/oom_score_adj"])
    c.create(preexec_fn=raise_own)
    c.start()
    c.wait_status("stopped")
    t.expect_eq(c.output().strip(), "123", "oom_score_adj inherited from the runtime's caller")


@check("process.terminal", C, "Process", MUST,
       "terminal true gives the process a pty (sent to --console-socket) of consoleSize")
def terminal(t):
    sock = t.console_socket()
    try:
        c = t.container(args=["sh", "-c", "tty; stty size; test -t 0 && test -t 1 && echo both-tty"],
                        process={"terminal": True, "consoleSize": {"height": 31, "width": 97}})
        c.create("--console-socket", str(sock.path))
        c.start()
        text = sock.read_all(timeout=5)
        c.wait_status("stopped")
    finally:
        sock.close()
    lines = [l.strip() for l in text.replace("\r", "").splitlines() if l.strip()]
    t.expect(any(l.startswith("/dev/pts/") or l == "/dev/console" for l in lines), f"tty output: {lines}")
    t.expect("31 97" in lines, f"stty size is not 31 97: {lines}")
    t.expect("both-tty" in lines, f"stdin/stdout are not the terminal: {lines}")


@check("process.scheduler", C, "Linux Process", MUST, "scheduler.policy is the process's policy")
def scheduler(t):
    c = t.container(args=["sleep", "1000"], process={"scheduler": {"policy": "SCHED_BATCH", "nice": 5}})
    c.create()
    c.start()
    pid = c.state()["pid"]
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    policy, nice = int(fields[38]), int(fields[16])
    t.expect_eq((policy, nice), (3, 5), "(policy, nice) from /proc/<pid>/stat (SCHED_BATCH=3)")


@check("process.ioPriority", C, "Linux Process", MUST, "ioPriority is the process's I/O priority")
def io_priority(t):
    c = t.container(args=["sleep", "1000"], process={"ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 6}})
    c.create()
    c.start()
    pid = c.state()["pid"]
    libc = ctypes.CDLL(None, use_errno=True)
    nr = {"x86_64": 252, "aarch64": 31}.get(os.uname().machine)
    t.require(nr is not None, f"no ioprio_get syscall number known for {os.uname().machine}")
    prio = libc.syscall(nr, 1, pid)  # IOPRIO_WHO_PROCESS
    t.expect(prio >= 0, f"ioprio_get failed: errno {ctypes.get_errno()}")
    t.expect_eq((prio >> 13, prio & 0xff), (2, 6), "(class, level) (IOPRIO_CLASS_BE=2)")


@check("process.apparmorProfile", C, "Linux Process", MUST, "apparmorProfile is applied")
def apparmor(t):
    t.require(t.host.apparmor_enabled(), f"AppArmor is not enabled on this host (LSMs: {t.host.lsm_list()})")
    out = t.sh("cat /proc/self/attr/current", process={"apparmorProfile": "unconfined"})
    t.expect("unconfined" in out, f"attr/current: {out!r}")


@check("process.selinuxLabel", C, "Linux Process", MUST, "selinuxLabel is applied")
def selinux(t):
    t.require(t.host.selinux_enabled(), f"SELinux is not enabled on this host (LSMs: {t.host.lsm_list()})")
    out = t.sh("cat /proc/self/attr/current")
    t.expect(bool(out.strip()), "no SELinux context")
