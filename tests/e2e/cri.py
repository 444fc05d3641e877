"""A minimal CRI (Kubernetes Container Runtime Interface, runtime.v1) client: what the kubelet says.

Debian 12 packages no CRI client (no crictl), so this speaks the few RuntimeService calls the
tests need over gRPC (grpcio) with hand-encoded protobuf messages.  A message is written as a
list of `(field_number, value)` pairs: str/bytes are length-delimited, int/bool are varints and a
list is a nested message.  Replies decode to `{field_number: [values]}` (bytes or int).
Field numbers are those of k8s.io/cri-api pkg/apis/runtime/v1/api.proto.
"""
from __future__ import annotations

import time

SERVICE = "/runtime.v1.RuntimeService/"

# ContainerState and NamespaceMode values from api.proto.
CONTAINER_RUNNING = 1
CONTAINER_EXITED = 2
NAMESPACE_POD = 0
NAMESPACE_CONTAINER = 1
NAMESPACE_NODE = 2
NAMESPACE_TARGET = 3
# SecurityProfile.ProfileType values.
PROFILE_RUNTIME_DEFAULT = 0
PROFILE_UNCONFINED = 1
PROFILE_LOCALHOST = 2  # localhost_ref: the absolute path of a profile file on the node


# --------------------------------------------------------------------------- protobuf

def encode(fields: list) -> bytes:
    out = bytearray()
    for number, value in fields:
        if value is None:
            continue
        if isinstance(value, (bool, int)):
            out += _varint(number << 3 | 0) + _varint(int(value))
            continue
        if isinstance(value, list):
            value = encode(value)
        elif isinstance(value, str):
            value = value.encode()
        out += _varint(number << 3 | 2) + _varint(len(value)) + value
    return bytes(out)


def decode(data: bytes) -> dict[int, list]:
    fields: dict[int, list] = {}
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 2:
            size, pos = _read_varint(data, pos)
            value, pos = data[pos:pos + size], pos + size
        elif wire == 1:
            value, pos = int.from_bytes(data[pos:pos + 8], "little"), pos + 8
        elif wire == 5:
            value, pos = int.from_bytes(data[pos:pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"protobuf wire type {wire} not supported")
        fields.setdefault(number, []).append(value)
    return fields


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negative int32/int64 are sent as 64-bit two's complement
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def first(fields: dict, number: int, default=None):
    return fields.get(number, [default])[0]


# --------------------------------------------------------------------------- the client

class CRIClient:
    """RuntimeService calls on a containerd socket; errors raise grpc.RpcError."""

    def __init__(self, socket_path: str):
        import grpc  # imported here: only the CRI tests need it
        self._grpc = grpc
        self.channel = grpc.insecure_channel(f"unix://{socket_path}")

    def close(self) -> None:
        self.channel.close()

    def call(self, method: str, fields: list, timeout: float = 60) -> dict:
        stub = self.channel.unary_unary(SERVICE + method, request_serializer=None,
                                        response_deserializer=None)
        return decode(stub(encode(fields), timeout=timeout))

    def version(self) -> str:
        reply = self.call("Version", [(1, "v1")])
        return first(reply, 2, b"").decode()

    def run_pod_sandbox(self, config: list, runtime_handler: str) -> str:
        reply = self.call("RunPodSandbox", [(1, config), (2, runtime_handler)])
        return first(reply, 1).decode()

    def stop_pod_sandbox(self, sandbox_id: str) -> None:
        self.call("StopPodSandbox", [(1, sandbox_id)])

    def remove_pod_sandbox(self, sandbox_id: str) -> None:
        self.call("RemovePodSandbox", [(1, sandbox_id)])

    def create_container(self, sandbox_id: str, config: list, sandbox_config: list) -> str:
        reply = self.call("CreateContainer", [(1, sandbox_id), (2, config), (3, sandbox_config)])
        return first(reply, 1).decode()

    def start_container(self, container_id: str) -> None:
        self.call("StartContainer", [(1, container_id)])

    def remove_container(self, container_id: str) -> None:
        self.call("RemoveContainer", [(1, container_id)])

    def container_status(self, container_id: str) -> dict:
        """The ContainerStatus message: state is field 3, exit_code 7, reason 10, message 11."""
        reply = self.call("ContainerStatus", [(1, container_id)])
        return decode(first(reply, 1, b""))

    def wait_exited(self, container_id: str, timeout: float = 20) -> int:
        # A poll with its own deadline: this client stands alone (no test helpers), so it
        # raises its own TimeoutError.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.container_status(container_id)
            if first(status, 3, 0) == CONTAINER_EXITED:
                return _int32(first(status, 7, 0))
            time.sleep(0.1)
        raise TimeoutError(f"container {container_id} did not exit in {timeout}s")

    def exec_sync(self, container_id: str, cmd: list[str], timeout: int = 20
                  ) -> tuple[int, bytes, bytes]:
        """(exit code, stdout, stderr) of a command run in the container."""
        reply = self.call("ExecSync", [(1, container_id), *[(2, c) for c in cmd], (3, timeout)],
                          timeout=timeout + 10)
        return _int32(first(reply, 3, 0)), first(reply, 1, b""), first(reply, 2, b"")


    # Additions for tests/e2e/test_cri_features.py.

    def stop_container(self, container_id: str, timeout: int = 0) -> None:
        """StopContainer: SIGTERM (the image's stop signal), SIGKILL after `timeout` seconds."""
        self.call("StopContainer", [(1, container_id), (2, timeout)], timeout=timeout + 60)

    def update_container_resources(self, container_id: str, linux_resources: list) -> None:
        """UpdateContainerResources with a LinuxContainerResources (see `linux_resources`)."""
        self.call("UpdateContainerResources", [(1, container_id), (2, linux_resources)])

    def container_info(self, container_id: str) -> dict:
        """The verbose ContainerStatus's `info` map (key -> JSON text), e.g. info["info"]."""
        reply = self.call("ContainerStatus", [(1, container_id), (2, True)])
        return {first(entry, 1, b"").decode(): first(entry, 2, b"").decode()
                for entry in map(decode, reply.get(2, []))}

    def container_stats(self, container_id: str) -> dict:
        """The ContainerStats message: cpu 2 (usage_core_nano_seconds 2), memory 3
        (working_set_bytes 2, usage_bytes 4), each value a UInt64Value (value 1)."""
        reply = self.call("ContainerStats", [(1, container_id)])
        return decode(first(reply, 1, b""))

    def wait_state(self, container_id: str, state: int, timeout: float = 20) -> dict:
        """The ContainerStatus once its state is `state`."""
        # A poll with its own deadline, as wait_exited; the error shows the last status.
        deadline = time.monotonic() + timeout
        while True:
            status = self.container_status(container_id)
            if first(status, 3, 0) == state:
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"container {container_id} not in state {state}: {status}")
            time.sleep(0.1)

    # The streaming calls: each answers with a URL on containerd's streaming server, which
    # tests/e2e/k8s_stream.py speaks to.

    def exec(self, container_id: str, cmd: list[str], *, tty: bool = False, stdin: bool = False,
             stdout: bool = True, stderr: bool = True) -> str:
        """Exec's streaming URL (tty and stderr exclude each other, as for the kubelet)."""
        reply = self.call("Exec", [(1, container_id), *[(2, c) for c in cmd], (3, tty or None),
                                   (4, stdin or None), (5, stdout or None), (6, stderr or None)])
        return first(reply, 1).decode()

    def attach(self, container_id: str, *, tty: bool = False, stdin: bool = False,
               stdout: bool = True, stderr: bool = True) -> str:
        reply = self.call("Attach", [(1, container_id), (2, stdin or None), (3, tty or None),
                                     (4, stdout or None), (5, stderr or None)])
        return first(reply, 1).decode()

    def port_forward(self, sandbox_id: str, ports: list[int]) -> str:
        reply = self.call("PortForward", [(1, sandbox_id), *[(2, p) for p in ports]])
        return first(reply, 1).decode()

    def reopen_container_log(self, container_id: str) -> None:
        """What the kubelet calls after renaming a container's log file to rotate it."""
        self.call("ReopenContainerLog", [(1, container_id)])


def _int32(n: int) -> int:
    n &= (1 << 32) - 1
    return n - (1 << 32) if n & (1 << 31) else n


# --------------------------------------------------------------------------- configs

def sandbox_config(name: str, log_directory: str, cgroup_parent: str) -> list:
    """A PodSandboxConfig on the host network (no CNI needed), like a hostNetwork pod."""
    metadata = [(1, name), (2, f"uid-{name}"), (3, "default"), (4, 0)]
    security = [(1, [(1, NAMESPACE_NODE)])]  # namespace_options.network = NODE
    linux = [(1, cgroup_parent), (2, security)]
    return [(1, metadata), (3, log_directory), (8, linux)]


def container_config(name: str, image: str, command: list[str], log_path: str) -> list:
    return [(1, [(1, name), (2, 0)]), (2, [(1, image)]), *[(3, c) for c in command],
            (11, log_path)]


# --------------------------------------------------------------------------- more configs
# Builders for the kubelet's pod and container settings; field numbers from api.proto.

def string_map(field: int, mapping: dict[str, str] | None) -> list:
    """A protobuf map<string, string> as the repeated entries (key 1, value 2) of `field`."""
    return [(field, [(1, k), (2, v)]) for k, v in (mapping or {}).items()]


def namespace_options(network: int | None = NAMESPACE_NODE, pid: int | None = None,
                      ipc: int | None = None, target_id: str | None = None) -> list:
    """A NamespaceOption: network 1, pid 2, ipc 3, target_id 4 (None: left out, i.e. POD)."""
    return [(1, network), (2, pid), (3, ipc), (4, target_id)]


def security_profile(profile_type: int, localhost_ref: str | None = None) -> list:
    return [(1, profile_type), (2, localhost_ref)]


def pod_sandbox_config(name: str, log_directory: str, cgroup_parent: str, *,
                       namespaces: list | None = None, privileged: bool = False,
                       sysctls: dict[str, str] | None = None) -> list:
    """A PodSandboxConfig like `sandbox_config` (host network unless `namespaces` says else),
    with LinuxSandboxSecurityContext.privileged (6) and LinuxPodSandboxConfig.sysctls (3)."""
    metadata = [(1, name), (2, f"uid-{name}"), (3, "default"), (4, 0)]
    security = [(1, namespaces if namespaces is not None else namespace_options()),
                (6, privileged or None)]
    linux = [(1, cgroup_parent), (2, security), *string_map(3, sysctls)]
    return [(1, metadata), (3, log_directory), (8, linux)]


def linux_resources(cpu_period: int | None = None, cpu_quota: int | None = None,
                    cpu_shares: int | None = None, memory_limit_in_bytes: int | None = None,
                    oom_score_adj: int | None = None, cpuset_cpus: str | None = None) -> list:
    """A LinuxContainerResources (the fields the kubelet fills from a pod's requests/limits)."""
    return [(1, cpu_period), (2, cpu_quota), (3, cpu_shares), (4, memory_limit_in_bytes),
            (5, oom_score_adj), (6, cpuset_cpus)]


def container_security(*, namespaces: list | None = None, run_as_user: int | None = None,
                       run_as_group: int | None = None, supplemental_groups: tuple = (),
                       readonly_rootfs: bool = False, privileged: bool = False,
                       add_capabilities: tuple = (), drop_capabilities: tuple = (),
                       no_new_privs: bool = False, masked_paths: tuple = (),
                       readonly_paths: tuple = (), seccomp: list | None = None,
                       run_as_username: str | None = None) -> list:
    """A LinuxContainerSecurityContext; None/False/empty fields are left out."""
    capabilities = ([*[(1, c) for c in add_capabilities], *[(2, c) for c in drop_capabilities]]
                    if add_capabilities or drop_capabilities else None)
    return [(1, capabilities), (2, privileged or None), (3, namespaces),
            (5, None if run_as_user is None else [(1, run_as_user)]), (6, run_as_username),
            (7, readonly_rootfs or None), *[(8, g) for g in supplemental_groups],
            (11, no_new_privs or None),
            (12, None if run_as_group is None else [(1, run_as_group)]),
            *[(13, p) for p in masked_paths], *[(14, p) for p in readonly_paths],
            (15, seccomp)]


def container_config_linux(name: str, image: str, command: list[str], log_path: str, *,
                           resources: list | None = None, security: list | None = None,
                           attempt: int = 0, working_dir: str | None = None,
                           envs: dict[str, str] | None = None, mounts: tuple = (),
                           devices: tuple = (), stdin: bool = False, stdin_once: bool = False,
                           tty: bool = False) -> list:
    """`container_config` with ContainerConfig.linux (15): resources 1, security_context 2;
    and working_dir 5, envs 6 (KeyValue), mounts 7 (`mount`), devices 8 (`device`),
    stdin 12, stdin_once 13, tty 14 (a pod spec's `stdin`, `stdinOnce`, `tty`)."""
    return [(1, [(1, name), (2, attempt)]), (2, [(1, image)]), *[(3, c) for c in command],
            (5, working_dir), *[(6, [(1, k), (2, v)]) for k, v in (envs or {}).items()],
            *[(7, m) for m in mounts], *[(8, d) for d in devices],
            (11, log_path), (12, stdin or None), (13, stdin_once or None), (14, tty or None),
            (15, [(1, resources), (2, security)])]


# MountPropagation values.
PROPAGATION_PRIVATE = 0
PROPAGATION_HOST_TO_CONTAINER = 1
PROPAGATION_BIDIRECTIONAL = 2


def mount(container_path: str, host_path: str, readonly: bool = False,
          propagation: int | None = None) -> list:
    """A Mount (a hostPath or emptyDir volume): container_path 1, host_path 2, readonly 3,
    propagation 5."""
    return [(1, container_path), (2, host_path), (3, readonly or None), (5, propagation)]


def device(container_path: str, host_path: str, permissions: str = "rwm") -> list:
    """A Device: container_path 1, host_path 2, permissions 3."""
    return [(1, container_path), (2, host_path), (3, permissions)]
