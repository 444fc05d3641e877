"""The pod and container settings the kubelet sends through containerd's CRI, on runc and ocirun.

Each scenario runs a pod sandbox whose runtime handler (a RuntimeClass's `handler`) is the
runtime under test and containers asking for one feature of a pod spec, then asserts what the
container actually sees (/proc/self/status, its mounts, its cgroup files, its namespaces), so a
runtime that ignored the setting fails.  The messages are hand-encoded by tests/e2e/cri.py with
the field numbers of k8s.io/cri-api pkg/apis/runtime/v1/api.proto.

Pods use the host network, like hostNetwork pods, unless a test asks for the pod's own network
namespace (CNI's bridge plugin on a private bridge, see engines.cni_conflist); one containerd
serves the module, and every test removes the pods it made.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import time

import pytest

import engines
import helpers
from engines import IMAGE, PAUSE_IMAGE

# The command of the pod sandbox (pause) container: IMAGE_COMMANDS[PAUSE_IMAGE].
PAUSE_ARGS = " ".join(engines.IMAGE_COMMANDS[PAUSE_IMAGE])

# What the kubelet sends as masked/readonly paths for the Default proc mount
# (k8s.io/kubernetes pkg/securitycontext: defaultMaskedPaths, defaultReadonlyPaths).
DEFAULT_MASKED_PATHS = ("/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                        "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
                        "/proc/scsi", "/sys/firmware")
DEFAULT_READONLY_PATHS = ("/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                          "/proc/sysrq-trigger")

# Capability numbers (linux/capability.h).
CAP_CHOWN = 0
CAP_NET_BIND_SERVICE = 10
CAP_NET_ADMIN = 12
CAP_NET_RAW = 13
CAP_SYS_ADMIN = 21

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def cri_engine():
    """containerd with the CRI plugin and a runtime entry per runtime, for the whole module."""
    with engines.cri_containerd(import_image=False, pod_network=True) as pair:
        yield pair


class Pod:
    """A running pod sandbox and the containers made in it (all removed by `pod`)."""

    def __init__(self, engine, client, runtime, **sandbox):
        import cri
        self.cri = cri
        self.client = client
        self.name = f"{engines.PREFIX}-{secrets.token_hex(4)}"
        self.logs = engine.scratch / "pods" / self.name
        self.config = cri.pod_sandbox_config(self.name, str(self.logs), engine.cgroup_parent,
                                              **sandbox)
        self.containers: list[str] = []
        self.id = client.run_pod_sandbox(self.config, runtime)

    def create(self, name: str, script: str, attempt: int = 0, **linux) -> str:
        """A container running `sh -c script`, logging to <log_directory>/<name>.log."""
        config = self.cri.container_config_linux(name, IMAGE, ["sh", "-c", script],
                                                  f"{name}.log", attempt=attempt, **linux)
        cid = self.client.create_container(self.id, config, self.config)
        self.containers.append(cid)
        return cid

    def start(self, name: str, script: str = "exec sleep 1000", **linux) -> str:
        cid = self.create(name, script, **linux)
        self.client.start_container(cid)
        return cid

    def run(self, name: str, script: str, **linux) -> tuple[int, str]:
        """(exit code, stdout and stderr lines from the CRI log) of a container run to its end."""
        cid = self.start(name, script, **linux)
        code = self.client.wait_exited(cid)
        return code, self.log_text(name)

    def log_lines(self, name: str) -> list[tuple[str, str, str]]:
        """(stream, tag, text) of each line of a container's CRI log file."""
        path = self.logs / f"{name}.log"
        # Bytes split at \n only: a terminal's output holds bare \r, which text mode and
        # splitlines() would take for line ends.
        text = path.read_bytes().decode(errors="replace") if path.exists() else ""
        lines = [line for line in text.split("\n") if line]
        parsed = []
        for line in lines:
            match = re.fullmatch(r"(\S+) (stdout|stderr) ([FP]) (.*)", line)
            assert match, f"not a CRI log line: {line!r} in {path}"
            parsed.append(match.group(2, 3, 4))
        return parsed

    def log_text(self, name: str) -> str:
        return "".join(text + ("\n" if tag == "F" else "")
                       for _stream, tag, text in self.log_lines(name))

    def sh(self, cid: str, script: str) -> str:
        """stdout of `sh -c script` exec'd in a running container; fails on a non-zero exit."""
        code, out, err = self.client.exec_sync(cid, ["sh", "-c", script])
        assert code == 0, (script, code, out, err)
        return out.decode()

    def close(self) -> None:
        for cid in self.containers:
            with contextlib.suppress(Exception):
                self.client.stop_container(cid, 0)
            with contextlib.suppress(Exception):
                self.client.remove_container(cid)
        self.client.stop_pod_sandbox(self.id)
        self.client.remove_pod_sandbox(self.id)


@contextlib.contextmanager
def pod(cri_engine, runtime, **sandbox):
    engine, client = cri_engine
    the_pod = Pod(engine, client, runtime, **sandbox)
    try:
        yield the_pod
    finally:
        the_pod.close()


def status_field(text: str, name: str) -> str:
    """A field of /proc/<pid>/status text, e.g. status_field(text, "CapEff")."""
    match = re.search(rf"^{name}:\s*(.*)$", text, re.M)
    assert match, f"no {name} in {text!r}"
    return match.group(1).strip()


def cap_bits(mask: str) -> set[int]:
    value = int(mask, 16)
    return {bit for bit in range(64) if value >> bit & 1}


def host_status(name: str) -> str:
    with open("/proc/self/status") as f:
        return status_field(f.read(), name)


def mounts_at(mountinfo: str, mountpoint: str) -> list[list[str]]:
    """The mountinfo lines (split) of the mounts at `mountpoint`."""
    lines = [line.split() for line in mountinfo.splitlines() if " - " in line]
    return [fields for fields in lines if len(fields) > 4 and fields[4] == mountpoint]


# --------------------------------------------------------------------------- 1. security context

def test_run_as_user_group_supplemental_groups(cri_engine, runtime):
    import cri
    with pod(cri_engine, runtime) as p:
        security = cri.container_security(run_as_user=1000, run_as_group=3000,
                                          supplemental_groups=(4000, 5000))
        code, out = p.run("c1", "id -u; id -g; cat /proc/self/status", security=security)
        assert code == 0, out
        uid, gid, status = out.split("\n", 2)
        assert (uid, gid) == ("1000", "3000"), out
        assert status_field(status, "Uid").split() == ["1000"] * 4, out
        assert status_field(status, "Gid").split() == ["3000"] * 4, out
        assert {"3000", "4000", "5000"} <= set(status_field(status, "Groups").split()), out
        # Not root: the capabilities are gone from the effective and permitted sets.
        assert status_field(status, "CapEff") == "0" * 16, out
        assert status_field(status, "CapPrm") == "0" * 16, out


def test_run_as_username_and_image_groups(cri_engine, runtime):
    # The image's /etc/passwd and /etc/group decide the gid and the groups (Merge policy).
    import cri
    with pod(cri_engine, runtime) as p:
        for name, security in (("byname", cri.container_security(run_as_username="test")),
                               ("byuid", cri.container_security(run_as_user=1000))):
            code, out = p.run(name, "cat /proc/self/status", security=security)
            assert status_field(out, "Uid").split() == ["1000"] * 4, (name, out)
            assert status_field(out, "Gid").split() == ["1000"] * 4, (name, out)
            assert "100" in status_field(out, "Groups").split(), (name, out)


def test_readonly_root_filesystem(cri_engine, runtime):
    import cri
    with pod(cri_engine, runtime) as p:
        code, out = p.run("ro", "touch /newfile && echo wrote; grep -q ' / [^ ]* ro,' "
                          "/proc/self/mountinfo && echo root-ro",
                          security=cri.container_security(readonly_rootfs=True))
        assert "wrote" not in out and "Read-only file system" in out, out
        assert "root-ro" in out, out
        code, out = p.run("rw", "touch /newfile && echo wrote")
        assert (code, out) == (0, "wrote\n")


def test_privileged(cri_engine, runtime):
    import cri
    with pod(cri_engine, runtime, privileged=True) as p:
        security = cri.container_security(privileged=True, masked_paths=DEFAULT_MASKED_PATHS,
                                          readonly_paths=DEFAULT_READONLY_PATHS)
        script = ("grep ^Cap /proc/self/status; grep ^Seccomp: /proc/self/status; "
                  "test -c /dev/kmsg && echo kmsg; "
                  "cat /proc/self/mountinfo")
        code, out = p.run("priv", script, security=security)
        assert code == 0, out
        # All the capabilities this host's bounding set allows (containerd asks for its own).
        assert status_field(out, "CapEff") == host_status("CapBnd"), out
        assert status_field(out, "CapBnd") == host_status("CapBnd"), out
        assert status_field(out, "Seccomp") == "0", out
        assert "kmsg" in out.splitlines(), "the host's devices are not there"
        sysfs = mounts_at(out, "/sys")
        assert sysfs and sysfs[-1][5].startswith("rw"), sysfs
        # Privileged containers get no masked paths, even when asked.
        assert not mounts_at(out, "/proc/timer_list"), out

        code, out = p.run("plain", "grep ^CapEff /proc/self/status; test -e /dev/kmsg && "
                          "echo kmsg; cat /proc/self/mountinfo")
        assert status_field(out, "CapEff") != host_status("CapBnd"), out
        assert "kmsg" not in out.splitlines(), out
        sysfs = mounts_at(out, "/sys")
        assert sysfs and sysfs[-1][5].startswith("ro"), sysfs


def test_capabilities_add_drop(cri_engine, runtime):
    import cri
    with pod(cri_engine, runtime) as p:
        code, out = p.run("default", "grep ^Cap /proc/self/status")
        default = cap_bits(status_field(out, "CapEff"))
        assert {CAP_CHOWN, CAP_NET_RAW} <= default and CAP_NET_ADMIN not in default, out
        assert CAP_SYS_ADMIN not in default, out

        security = cri.container_security(add_capabilities=("NET_ADMIN",),
                                          drop_capabilities=("NET_RAW", "CHOWN"))
        code, out = p.run("adddrop", "grep ^Cap /proc/self/status", security=security)
        assert code == 0, out
        for field in ("CapEff", "CapPrm", "CapBnd"):
            assert cap_bits(status_field(out, field)) == (
                default | {CAP_NET_ADMIN}) - {CAP_NET_RAW, CAP_CHOWN}, (field, out)

        # The restricted Pod Security Standard's pattern: drop ALL, add back one.
        security = cri.container_security(add_capabilities=("NET_BIND_SERVICE",),
                                          drop_capabilities=("ALL",))
        code, out = p.run("dropall", "grep ^Cap /proc/self/status", security=security)
        for field in ("CapEff", "CapPrm", "CapBnd"):
            assert cap_bits(status_field(out, field)) == {CAP_NET_BIND_SERVICE}, (field, out)


def test_no_new_privs(cri_engine, runtime):
    import cri
    with pod(cri_engine, runtime) as p:
        code, out = p.run("nnp", "grep ^NoNewPrivs /proc/self/status",
                          security=cri.container_security(no_new_privs=True))
        assert status_field(out, "NoNewPrivs") == "1", out
        code, out = p.run("plain", "grep ^NoNewPrivs /proc/self/status")
        assert status_field(out, "NoNewPrivs") == "0", out


def test_seccomp_runtime_default_and_unconfined(cri_engine, runtime):
    import cri
    with pod(cri_engine, runtime) as p:
        default = cri.container_security(seccomp=cri.security_profile(cri.PROFILE_RUNTIME_DEFAULT))
        cid = p.start("default", security=default)
        assert status_field(p.sh(cid, "cat /proc/self/status"), "Seccomp") == "2"
        # The filter applies to the container's first process too, not only to exec.
        code, out = p.run("default-init", "grep ^Seccomp: /proc/self/status", security=default)
        assert status_field(out, "Seccomp") == "2", out

        unconfined = cri.container_security(seccomp=cri.security_profile(cri.PROFILE_UNCONFINED))
        code, out = p.run("unconfined", "grep ^Seccomp: /proc/self/status", security=unconfined)
        assert status_field(out, "Seccomp") == "0", out


def test_seccomp_localhost_profile(cri_engine, runtime, tmp_path):
    """A pod's `seccompProfile: Localhost` names a profile file on the node; containerd reads it
    into linux.seccomp and the runtime enforces it: here mkdir fails with EPERM, all else runs."""
    import cri
    profile = tmp_path / "no-mkdir.json"
    profile.write_text(json.dumps({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}))
    with pod(cri_engine, runtime) as p:
        local = cri.container_security(seccomp=cri.security_profile(cri.PROFILE_LOCALHOST, str(profile)))
        code, out = p.run("localhost", "grep ^Seccomp: /proc/self/status; mkdir /tmp/d || echo refused; "
                                       "touch /tmp/f && echo touched", security=local)
        assert status_field(out, "Seccomp") == "2", out
        assert "refused" in out and "Operation not permitted" in out and "touched" in out, out


def test_masked_and_readonly_paths(cri_engine, runtime):
    import cri
    with pod(cri_engine, runtime) as p:
        security = cri.container_security(masked_paths=DEFAULT_MASKED_PATHS,
                                          readonly_paths=DEFAULT_READONLY_PATHS)
        # (This host's kernel has no /proc/kcore: /proc/timer_list is the masked file read.)
        script = ("wc -c < /proc/timer_list; ls -A /sys/firmware | wc -l; "
                  "cat /proc/self/mountinfo")
        code, out = p.run("masked", script, security=security)
        timer_list_size, firmware_entries, _ = out.split("\n", 2)
        assert timer_list_size.strip() == "0", out  # /dev/null over it
        assert firmware_entries.strip() == "0", out  # an empty tmpfs over it
        assert mounts_at(out, "/proc/timer_list") and mounts_at(out, "/proc/keys"), out
        procsys = mounts_at(out, "/proc/sys")
        assert procsys and procsys[-1][5].startswith("ro"), out

        # procMount: Unmasked -- the kubelet sends no paths at all.
        code, out = p.run("unmasked", "wc -c < /proc/timer_list; ls -A /sys/firmware | wc -l; "
                          "cat /proc/self/mountinfo")
        timer_list_size, firmware_entries, _ = out.split("\n", 2)
        assert int(timer_list_size) > 0 and int(firmware_entries) > 0, out
        assert not mounts_at(out, "/proc/timer_list") and not mounts_at(out, "/proc/sys"), out
        assert not mounts_at(out, "/sys/firmware"), out


# --------------------------------------------------------------------------- 2. namespaces

def test_host_network(cri_engine, runtime):
    with pod(cri_engine, runtime) as p:
        code, out = p.run("c1", "readlink /proc/self/ns/net; ls /sys/class/net")
        netns, *interfaces = out.split()
        assert netns == os.readlink("/proc/self/ns/net"), out
        assert sorted(interfaces) == sorted(os.listdir("/sys/class/net")), out


def test_host_pid(cri_engine, runtime):
    import cri
    node = cri.namespace_options(pid=cri.NAMESPACE_NODE)
    with pod(cri_engine, runtime, namespaces=node) as p:
        code, out = p.run("c1", "readlink /proc/self/ns/pid; tr '\\0' ' ' < /proc/1/cmdline",
                          security=cri.container_security(namespaces=node))
        pidns, cmdline = out.split("\n", 1)
        assert pidns == os.readlink("/proc/self/ns/pid"), out
        with open("/proc/1/cmdline") as f:
            assert cmdline.strip() == f.read().replace("\0", " ").strip(), out


def test_host_ipc(cri_engine, runtime):
    import cri
    node = cri.namespace_options(ipc=cri.NAMESPACE_NODE)
    with pod(cri_engine, runtime, namespaces=node) as p:
        code, out = p.run("host", "readlink /proc/self/ns/ipc",
                          security=cri.container_security(namespaces=node))
        assert out.strip() == os.readlink("/proc/self/ns/ipc"), out
    with pod(cri_engine, runtime) as p:
        code, out = p.run("pod", "readlink /proc/self/ns/ipc")
        assert out.strip().startswith("ipc:[") and out.strip() != os.readlink(
            "/proc/self/ns/ipc"), out


def test_pid_namespace_pod_and_container(cri_engine, runtime):
    import cri
    shared = cri.namespace_options(pid=cri.NAMESPACE_POD)
    with pod(cri_engine, runtime, namespaces=shared) as p:
        # shareProcessNamespace: the pause process is pid 1 and the other containers are seen.
        other = p.start("other", security=cri.container_security(namespaces=shared))
        cid = p.start("c1", "exec sleep 1001", security=cri.container_security(namespaces=shared))
        out = p.sh(cid, "ps -o pid,args")
        assert re.search(rf"^\s*1\s+{re.escape(PAUSE_ARGS)}$", out, re.M), out
        assert re.search(r"^\s*\d+\s+sleep 1000$", out, re.M), out
        assert re.search(r"^\s*\d+\s+sleep 1001$", out, re.M), out
        assert p.sh(other, "readlink /proc/self/ns/pid") == p.sh(cid, "readlink /proc/self/ns/pid")

    own = cri.namespace_options(pid=cri.NAMESPACE_CONTAINER)
    with pod(cri_engine, runtime, namespaces=own) as p:
        # The kubelet's default: each container has its own pid namespace, itself pid 1.
        other = p.start("other", security=cri.container_security(namespaces=own))
        cid = p.start("c1", "exec sleep 1001", security=cri.container_security(namespaces=own))
        out = p.sh(cid, "ps -o pid,args")
        assert re.search(r"^\s*1\s+sleep 1001$", out, re.M), out
        assert "sleep 1000" not in out and PAUSE_ARGS not in out, out
        assert p.sh(other, "readlink /proc/self/ns/pid") != p.sh(cid, "readlink /proc/self/ns/pid")


def test_pid_namespace_target(cri_engine, runtime):
    # An ephemeral (debug) container joins the pid namespace of the container it targets.
    import cri
    own = cri.namespace_options(pid=cri.NAMESPACE_CONTAINER)
    with pod(cri_engine, runtime, namespaces=own) as p:
        target = p.start("target", "exec sleep 1002",
                         security=cri.container_security(namespaces=own))
        debug = p.start("debug", security=cri.container_security(namespaces=cri.namespace_options(
            pid=cri.NAMESPACE_TARGET, target_id=target)))
        out = p.sh(debug, "ps -o pid,args")
        assert re.search(r"^\s*1\s+sleep 1002$", out, re.M), out
        assert re.search(r"^\s*\d+\s+sleep 1000$", out, re.M), out
        assert p.sh(debug, "readlink /proc/self/ns/pid") == p.sh(target,
                                                                  "readlink /proc/self/ns/pid")


def test_namespaced_sysctls(cri_engine, runtime):
    # The pod's own IPC namespace takes kernel.shm_rmid_forced and kernel.msgmax; the host's
    # values stay as they were.
    with open("/proc/sys/kernel/shm_rmid_forced") as f:
        host_rmid = f.read().strip()
    with open("/proc/sys/kernel/msgmax") as f:
        host_msgmax = f.read().strip()
    wanted = {"kernel.shm_rmid_forced": "0" if host_rmid == "1" else "1",
              "kernel.msgmax": str(int(host_msgmax) - 1)}
    with pod(cri_engine, runtime, sysctls=wanted) as p:
        code, out = p.run("c1", "cat /proc/sys/kernel/shm_rmid_forced /proc/sys/kernel/msgmax")
        assert out.split() == [wanted["kernel.shm_rmid_forced"], wanted["kernel.msgmax"]], out
    with open("/proc/sys/kernel/shm_rmid_forced") as f:
        assert f.read().strip() == host_rmid
    with open("/proc/sys/kernel/msgmax") as f:
        assert f.read().strip() == host_msgmax


def test_net_sysctl_refused_in_host_network(cri_engine, runtime):
    # A net.* sysctl in a hostNetwork pod would change the host: runtimes refuse it (the value
    # asked is the host's own, so nothing changes should one accept it).
    import grpc
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        host_range = " ".join(f.read().split())
    engine, client = cri_engine
    with pytest.raises(grpc.RpcError) as failure:
        with pod(cri_engine, runtime, sysctls={"net.ipv4.ip_local_port_range": host_range}):
            pass
    assert "sysctl" in failure.value.details(), failure.value.details()
    assert not leftover_sandboxes(client), "the failed sandbox was left behind"


def test_net_sysctls_in_pod_network(cri_engine, runtime):
    # A pod of its own network namespace (CNI's eth0) may set net.* sysctls: the pause
    # container's runtime writes them there, every container of the pod sees them, and the
    # host keeps its own.
    import cri
    engines.require_pod_network(cri_engine[0])
    sysctls = {"net.ipv4.ip_local_port_range": "20000\t30000",
               "net.ipv4.ip_unprivileged_port_start": "80"}
    files = [f"/proc/sys/{name.replace('.', '/')}" for name in sysctls]
    host = {}
    for path in files:
        with open(path) as f:
            host[path] = f.read()
    own_network = cri.namespace_options(network=cri.NAMESPACE_POD)
    with pod(cri_engine, runtime, namespaces=own_network, sysctls=sysctls) as p:
        code, out = p.run("c1", f"readlink /proc/self/ns/net; cat {' '.join(files)}; "
                          "ip -o -4 addr show eth0",
                          security=cri.container_security(namespaces=own_network))
        assert code == 0, out
        netns, port_range, port_start, eth0 = out.split("\n", 3)
        assert netns != os.readlink("/proc/self/ns/net"), out
        assert (port_range, port_start) == ("20000\t30000", "80"), out
        assert " inet 10.213.0." in eth0, out  # the CNI network's address
    for path in files:
        with open(path) as f:
            assert f.read() == host[path], path


def leftover_sandboxes(client) -> list:
    """The pod sandboxes containerd still lists (ListPodSandbox: items are field 1)."""
    import cri
    reply = client.call("ListPodSandbox", [])
    return [cri.first(cri.decode(item), 1) for item in reply.get(1, [])]


# --------------------------------------------------------------------------- 3. resources

def cgroup_files(p: Pod, cid: str) -> dict[str, str]:
    """The container's cpu and memory limits, read on the host in its cgroup directories."""
    paths = dict(line.split(":", 2)[1:] for line in p.sh(cid, "cat /proc/self/cgroup").split())
    memory = f"/sys/fs/cgroup/memory{paths['memory']}"
    cpu = next(f"/sys/fs/cgroup/{ctrl}{path}" for ctrl, path in paths.items()
               if "cpu" in ctrl.split(",") and os.path.isdir(f"/sys/fs/cgroup/{ctrl}{path}"))
    values = {}
    for directory, name in ((memory, "memory.limit_in_bytes"), (cpu, "cpu.cfs_period_us"),
                            (cpu, "cpu.cfs_quota_us"), (cpu, "cpu.shares")):
        with open(f"{directory}/{name}") as f:
            values[name] = f.read().strip()
    return values


def test_cpu_memory_limits_and_update(cri_engine, runtime):
    import cri
    with pod(cri_engine, runtime) as p:
        resources = cri.linux_resources(cpu_period=100000, cpu_quota=50000, cpu_shares=512,
                                        memory_limit_in_bytes=64 * MIB)
        cid = p.start("c1", resources=resources)
        assert cgroup_files(p, cid) == {
            "memory.limit_in_bytes": str(64 * MIB), "cpu.cfs_period_us": "100000",
            "cpu.cfs_quota_us": "50000", "cpu.shares": "512"}
        # What the container sees in its own /sys/fs/cgroup.
        inside = p.sh(cid, "cat /sys/fs/cgroup/memory/memory.limit_in_bytes "
                      "/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
        assert inside.split() == [str(64 * MIB), "50000"], inside

        client = cri_engine[1]
        client.update_container_resources(cid, cri.linux_resources(
            cpu_period=100000, cpu_quota=20000, cpu_shares=256, memory_limit_in_bytes=128 * MIB))
        assert cgroup_files(p, cid) == {
            "memory.limit_in_bytes": str(128 * MIB), "cpu.cfs_period_us": "100000",
            "cpu.cfs_quota_us": "20000", "cpu.shares": "256"}
        # ContainerStatus reports the resources now in force (resources 16, linux 1).
        status = client.container_status(cid)
        linux = cri.decode(cri.first(cri.decode(cri.first(status, 16, b"")), 1, b""))
        assert (cri.first(linux, 2), cri.first(linux, 4)) == (20000, 128 * MIB), linux


def test_oom_score_adj_and_cpuset(cri_engine, runtime):
    import cri
    with pod(cri_engine, runtime) as p:
        resources = cri.linux_resources(oom_score_adj=500, cpuset_cpus="1")
        cid = p.start("c1", resources=resources)
        out = p.sh(cid, "cat /proc/self/oom_score_adj; grep ^Cpus_allowed_list /proc/self/status")
        assert out.split("\n")[0] == "500", out
        assert status_field(out, "Cpus_allowed_list") == "1", out
        cri_engine[1].update_container_resources(cid, cri.linux_resources(cpuset_cpus="0"))
        out = p.sh(cid, "grep ^Cpus_allowed_list /proc/self/status")
        assert status_field(out, "Cpus_allowed_list") == "0", out


def test_container_stats(cri_engine, runtime):
    # The shim reads the stats from the cgroup the runtime put the container in.
    import cri
    with pod(cri_engine, runtime) as p:
        cid = p.start("c1", "head -c 20000000 /dev/zero | tail -c 1 >/dev/null; "
                      "exec sleep 1000")

        def value(stats: dict, section: int, field: int) -> int:
            usage = cri.decode(cri.first(stats, section, b""))
            return cri.first(cri.decode(cri.first(usage, field, b"")), 1, 0)

        def counted() -> bool:  # cpu usage_core_nano_seconds and memory usage_bytes
            stats = cri_engine[1].container_stats(cid)
            return value(stats, 2, 2) > 0 and value(stats, 3, 4) > 0
        helpers.wait_until(counted, 10, "cpu and memory usage in the container's stats")


def test_oom_killed(cri_engine, runtime):
    import cri
    with pod(cri_engine, runtime) as p:
        resources = cri.linux_resources(memory_limit_in_bytes=32 * MIB)
        # dd's 256 MiB buffer, filled from /dev/zero, is far over the limit.
        cid = p.start("oom", "exec dd if=/dev/zero of=/dev/null bs=256M count=1",
                      resources=resources)
        code = cri_engine[1].wait_exited(cid, timeout=30)
        status = cri_engine[1].container_status(cid)
        assert cri.first(status, 10, b"").decode() == "OOMKilled", (code, status,
                                                                     p.log_text("oom"))
        assert code == 137, code


# --------------------------------------------------------------------------- 4. lifecycle

def test_container_logs_cri_format(cri_engine, runtime):
    with pod(cri_engine, runtime) as p:
        code, _ = p.run("c1", "echo out1; echo err1 >&2; sleep 0.2; echo out2; exit 5")
        assert code == 5
        lines = p.log_lines("c1")
        assert ("stdout", "F", "out1") in lines and ("stdout", "F", "out2") in lines, lines
        assert ("stderr", "F", "err1") in lines, lines
        assert lines.index(("stdout", "F", "out1")) < lines.index(("stdout", "F", "out2"))


def test_exec_sync_exit_codes_and_streams(cri_engine, runtime):
    with pod(cri_engine, runtime) as p:
        cid = p.start("c1")
        code, out, err = cri_engine[1].exec_sync(cid, ["sh", "-c", "echo o; echo e >&2; exit 9"])
        assert (code, out, err) == (9, b"o\n", b"e\n")
        code, out, err = cri_engine[1].exec_sync(cid, ["sh", "-c", "pwd; id -u"])
        assert (code, out) == (0, b"/\n0\n"), err


def test_stop_with_grace_period(cri_engine, runtime):
    import cri
    client = cri_engine[1]
    with pod(cri_engine, runtime) as p:
        # A container that ignores SIGTERM is killed (SIGKILL) once the grace period is over.
        cid = p.start("stubborn", "trap '' TERM; echo ready; while :; do sleep 0.1; done")
        wait_log(p, "stubborn", "ready")
        started = time.monotonic()
        client.stop_container(cid, 2)
        took = time.monotonic() - started
        status = client.container_status(cid)
        assert cri.first(status, 3) == cri.CONTAINER_EXITED, status
        assert cri._int32(cri.first(status, 7, 0)) == 137, status
        assert 1.8 <= took < 15, took

        # One that exits on SIGTERM stops at once with its own status.
        cid = p.start("polite", "trap 'exit 3' TERM; echo ready; while :; do sleep 0.1; done")
        wait_log(p, "polite", "ready")
        started = time.monotonic()
        client.stop_container(cid, 30)
        took = time.monotonic() - started
        assert cri._int32(cri.first(client.container_status(cid), 7, 0)) == 3
        assert took < 10, took


def wait_log(p: Pod, name: str, text: str, timeout: float = 10) -> None:
    # A poll with its own deadline: the failure shows the log lines so far.
    deadline = time.monotonic() + timeout
    while text not in p.log_text(name).split("\n"):
        assert time.monotonic() < deadline, f"{name} never logged {text!r}: {p.log_lines(name)}"
        time.sleep(0.05)


def test_container_recreated_in_same_sandbox(cri_engine, runtime):
    client = cri_engine[1]
    with pod(cri_engine, runtime) as p:
        first_id = p.start("c1", "echo first; exit 1")
        assert client.wait_exited(first_id) == 1
        # The kubelet's restart: a new container, attempt + 1, same name, same sandbox.
        second = p.create("c1", "echo second; exec sleep 1000", attempt=1)
        client.start_container(second)
        wait_log(p, "c1", "second")
        client.remove_container(first_id)
        p.containers.remove(first_id)
        # Removed and made again with the same name and attempt (a kubelet that lost state).
        client.stop_container(second, 0)
        client.remove_container(second)
        p.containers.remove(second)
        third = p.start("c1", "echo third; exit 4")
        assert client.wait_exited(third) == 4
        assert "third" in p.log_text("c1").split("\n"), p.log_lines("c1")


# --------------------------------------------------------------------------- more of the pod spec

def test_exec_gets_the_container_security_context(cri_engine, runtime):
    # Exec probes and `kubectl exec` run with the container's user, capabilities, no_new_privs
    # and seccomp filter, not the runtime's defaults.
    import cri
    security = cri.container_security(run_as_user=1000, run_as_group=3000,
                                      supplemental_groups=(4000,), no_new_privs=True,
                                      add_capabilities=("NET_BIND_SERVICE",),
                                      drop_capabilities=("ALL",), readonly_rootfs=True,
                                      seccomp=cri.security_profile(cri.PROFILE_RUNTIME_DEFAULT))
    with pod(cri_engine, runtime) as p:
        cid = p.start("c1", security=security)
        status = p.sh(cid, "cat /proc/self/status")
        assert status_field(status, "Uid").split() == ["1000"] * 4, status
        assert status_field(status, "Gid").split() == ["3000"] * 4, status
        assert "4000" in status_field(status, "Groups").split(), status
        assert cap_bits(status_field(status, "CapBnd")) == {CAP_NET_BIND_SERVICE}, status
        assert status_field(status, "NoNewPrivs") == "1", status
        assert status_field(status, "Seccomp") == "2", status
        code, _out, err = cri_engine[1].exec_sync(cid, ["touch", "/x"])
        assert code != 0 and b"Read-only file system" in err, err


def test_env_and_working_dir(cri_engine, runtime):
    with pod(cri_engine, runtime) as p:
        code, out = p.run("c1", 'pwd; echo "$FOO|$BAR"', working_dir="/etc",
                          envs={"FOO": "foo value", "BAR": "x=y"})
        assert (code, out) == (0, "/etc\nfoo value|x=y\n")


def test_missing_working_dir_is_created(cri_engine, runtime):
    # A pod's workingDir need not exist in the image: runc makes it (mkdir -p, in the
    # container's rootfs, before the process starts) and containerd counts on that.
    with pod(cri_engine, runtime) as p:
        code, out = p.run("c1", "pwd; stat -c '%u %a' .", working_dir="/made/by/runtime")
        assert (code, out) == (0, "/made/by/runtime\n0 755\n")


def test_volume_mounts_rw_and_readonly(cri_engine, runtime, tmp_path):
    import cri
    rw, ro = tmp_path / "rw", tmp_path / "ro"
    rw.mkdir()
    ro.mkdir()
    (ro / "given").write_text("from the host\n")
    with pod(cri_engine, runtime) as p:
        mounts = (cri.mount("/data", str(rw)), cri.mount("/config", str(ro), readonly=True))
        code, out = p.run("c1", "echo written > /data/out; cat /config/given; "
                          "touch /config/x 2>&1; cat /proc/self/mountinfo", mounts=mounts)
        assert (rw / "out").read_text() == "written\n"
        assert "from the host" in out and "Read-only file system" in out, out
        assert not (ro / "x").exists()
        config = mounts_at(out, "/config")
        assert config and config[-1][5].startswith("ro"), out


@contextlib.contextmanager
def shared_mount(path):
    """`path` bind-mounted on itself and made rshared (what mount propagation needs)."""
    import subprocess
    path.mkdir()
    subprocess.run(["mount", "--bind", str(path), str(path)], check=True)
    try:
        subprocess.run(["mount", "--make-rshared", str(path)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-R", "-l", str(path)], check=False)


def test_mount_propagation(cri_engine, runtime, tmp_path):
    import subprocess

    import cri
    with shared_mount(tmp_path / "vol") as vol, pod(cri_engine, runtime, privileged=True) as p:
        (vol / "from-host").mkdir()
        (vol / "from-container").mkdir()
        mounts = (cri.mount("/h2c", str(vol), propagation=cri.PROPAGATION_HOST_TO_CONTAINER),)
        h2c = p.start("h2c", mounts=mounts)
        bidi = p.start("bidi", mounts=(
            cri.mount("/bidi", str(vol), propagation=cri.PROPAGATION_BIDIRECTIONAL),),
            security=cri.container_security(privileged=True))
        try:
            # HostToContainer (rslave): a mount made on the host later shows in the container.
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "fromhost",
                            str(vol / "from-host")], check=True)
            (vol / "from-host" / "file").write_text("seen\n")
            assert p.sh(h2c, "cat /h2c/from-host/file") == "seen\n"
            # Bidirectional (rshared): a mount made in the container shows on the host.
            p.sh(bidi, "mount -t tmpfs -o size=1m fromctr /bidi/from-container && "
                 "echo back > /bidi/from-container/file")
            assert (vol / "from-container" / "file").read_text() == "back\n"
            # ... and, HostToContainer, in the other container too.
            assert p.sh(h2c, "cat /h2c/from-container/file") == "back\n"
        finally:
            for sub in ("from-container", "from-host"):
                subprocess.run(["umount", "-l", str(vol / sub)], check=False)


def test_devices_and_their_cgroup_permissions(cri_engine, runtime):
    # /dev/kmsg is not in the default device allowlist: the device's permissions decide.
    import cri
    message = f"<6>{engines.PREFIX}: a device test wrote this"
    with pod(cri_engine, runtime) as p:
        devices = (cri.device("/dev/log-ro", "/dev/kmsg", "r"),)
        code, out = p.run("ro", f"test -c /dev/log-ro && echo device; echo '{message}' > "
                          "/dev/log-ro || echo refused", devices=devices)
        assert "device" in out.split("\n"), out  # (stdout and stderr lines interleave freely)
        assert "refused" in out and "Operation not permitted" in out, out
        devices = (cri.device("/dev/log-rw", "/dev/kmsg", "rw"),)
        code, out = p.run("rw", f"echo '{message}' > /dev/log-rw && echo wrote",
                          devices=devices)
        assert out.split() == ["wrote"], out
        # Not asked for, not there.
        code, out = p.run("none", "test -e /dev/kmsg || echo absent")
        assert out.split() == ["absent"], out
