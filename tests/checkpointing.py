"""What the checkpoint/restore tests share (tests/v2/test_checkpoint.py in the plain v2 guest,
tests/systemd/test_checkpoint_systemd.py in the systemd one): a container that counts on its
stdout, a pipe of ours, so that a restore can be told from a restart; the runtimes side by side.
"""
from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time

import helpers

TIMEOUT = 180  # per runtime call: the guests are ~30x slower than the host


def criu_problem() -> str | None:
    criu = shutil.which("criu")
    if criu is None:
        return "criu is not installed"
    r = subprocess.run([criu, "check"], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        return f"`criu check` fails on this kernel: {(r.stderr or r.stdout).strip().splitlines()[-1:]}"
    return None


COUNTER = "i=0; while :; do i=$((i+1)); echo $i; echo $i > /tmp/count; sleep 0.2; done"
TMPFS = {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev"]}


class Runtime:
    """ocirun or runc with its own state root (and any global flags, e.g. --systemd-cgroup)."""

    def __init__(self, name: str, root, *flags: str):
        self.name, self.root, self.flags = name, root, list(flags)
        base = helpers.run_runc if name == "runc" else helpers.run_ocirun
        self.run = lambda *args, **kw: base(*self.flags, *args, **kw)

    def command(self) -> list[str]:
        exe = [helpers.RUNC] if self.name == "runc" else helpers.ocirun_command()
        return exe + ["--root", str(self.root), *self.flags]

    def ok(self, *args, **kw):
        r = self.run(*args, root=self.root, timeout=TIMEOUT, **kw)
        assert r.returncode == 0, f"[{self.name}] {' '.join(map(str, args))} -> {r.returncode}: {r.stderr}"
        return r

    def with_pipes(self, *args) -> "Pipes":
        """`ARGS` (run -d / restore -d) with three fresh pipes as stdio; our ends back."""
        pipes = Pipes()
        proc = subprocess.Popen(self.command() + [str(a) for a in args], stdin=pipes.theirs[0],
                                stdout=pipes.theirs[1], stderr=pipes.theirs[2],
                                env=dict(os.environ, PYTHONPATH=str(helpers.REPO)))
        pipes.close_theirs()
        status = proc.wait(timeout=TIMEOUT)
        assert status == 0, f"[{self.name}] {args[0]} -> {status}: {pipes.read_err()}"
        return pipes

    def state(self, cid: str) -> dict:
        return json.loads(self.ok("state", cid).stdout)


class Pipes:
    def __init__(self) -> None:
        stdin, stdout, stderr = os.pipe(), os.pipe(), os.pipe()
        self.theirs = [stdin[0], stdout[1], stderr[1]]
        self.ours = [stdin[1], stdout[0], stderr[0]]
        self.buffer = b""

    def close_theirs(self) -> None:
        for fd in self.theirs:
            os.close(fd)

    def read_err(self) -> str:
        os.set_blocking(self.ours[2], False)
        try:
            return os.read(self.ours[2], 65536).decode(errors="replace")
        except BlockingIOError:
            return ""

    def numbers(self, at_least: int, timeout: float = 60) -> list[int]:
        """Read the counter's lines until `at_least` complete ones have come."""
        deadline = time.monotonic() + timeout
        while self.buffer.count(b"\n") < at_least:
            left = deadline - time.monotonic()
            assert left > 0, f"the counter printed only {self.buffer!r}"
            ready, _, _ = select.select([self.ours[1]], [], [], left)
            if ready:
                chunk = os.read(self.ours[1], 4096)
                assert chunk, f"stdout closed after {self.buffer!r}"
                self.buffer += chunk
        lines, _, self.buffer = self.buffer.rpartition(b"\n")
        return [int(x) for x in lines.split()]

    def rest(self, timeout: float = 60) -> list[int]:
        """Every number still to come, up to end-of-file (the writer has exited)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, "stdout stayed open"
            ready, _, _ = select.select([self.ours[1]], [], [], left)
            if ready:
                chunk = os.read(self.ours[1], 4096)
                if not chunk:
                    break
                self.buffer += chunk
        lines, self.buffer = self.buffer, b""
        return [int(x) for x in lines.split()]

    def close(self) -> None:
        for fd in self.ours:
            os.close(fd)


def counter_bundle(tmp_path, name, mounts=(), **overrides):
    bundle = helpers.make_bundle(tmp_path, ["sh", "-c", COUNTER], name=name, **overrides)
    config = helpers.read_config(bundle)
    config["mounts"] += [TMPFS, *mounts]
    config["process"]["terminal"] = False
    helpers.write_config(bundle, config)
    return bundle


def assert_continues(before: list[int], after: list[int]) -> None:
    assert after[0] > before[-1], f"restarted instead of restored: {before[-3:]} then {after[:3]}"
    assert after == list(range(after[0], after[0] + len(after))), after
