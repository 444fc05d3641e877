"""Lifecycle and operations (runtime.md): create / start / state / kill / delete, the status
each one leaves, the errors they owe for unknown ids and wrong states, and the state document."""
from __future__ import annotations

import os
import time

from .framework import MUST, SHOULD, Fail, check

R = "runtime.md"
STATUSES = {"creating", "created", "running", "stopped"}


@check("baseline.run", R, "Lifecycle", MUST,
       "a plain container can be created, started, stopped and deleted", baseline=True)
def baseline(t):
    out = t.sh("echo hello-from-container > /out/hello; echo ok")
    t.expect_eq(out.strip(), "ok", "container stdout")


@check("lifecycle.create.status", R, "Create", MUST,
       "after create returns, status is `created` and the program has not run")
def create_status(t):
    c = t.container(args=["sh", "-c", "touch /out/ran; sleep 1000"])
    c.create()
    st = c.state()
    t.expect_eq(st.get("status"), "created", "status after create")
    time.sleep(0.3)
    t.expect(not (c.bundle.out / "ran").exists(),
             "process.args ran during create (Lifecycle step 2: MUST NOT be run at this time)")


@check("lifecycle.start.runs-program", R, "Start", MUST,
       "start runs process.args and leaves status `running`")
def start_runs(t):
    c = t.container(args=["sh", "-c", "touch /out/ran; exec sleep 1000"])
    c.create()
    c.start()
    st = c.state()
    t.expect_eq(st.get("status"), "running", "status after start")
    deadline = time.monotonic() + 5
    while not (c.bundle.out / "ran").exists():
        t.expect(time.monotonic() < deadline, "the program did not run after start")
        time.sleep(0.02)


@check("lifecycle.create.duplicate-id", R, "Create", MUST,
       "create with an id already in use errors and leaves the first container untouched")
def duplicate_id(t):
    first = t.container(args=["sleep", "1000"])
    first.create()
    before = first.state()
    second = t.container(args=["true"])
    second.id = first.id
    r = second.create(check=False)
    t.expect_error(r, "a second create with the same id")
    after = first.state()
    t.expect_eq((after.get("status"), after.get("pid"), after.get("bundle")),
                (before.get("status"), before.get("pid"), before.get("bundle")),
                "first container's state after the failed duplicate create")


@check("lifecycle.create.no-id", R, "Create", MUST,
       "create without a container id errors")
def create_without_id(t):
    b = t.bundle(["true"])
    r = t.runtime("create", "--bundle", b.path)
    t.expect_error(r, "create without an id")


@check("lifecycle.create.bad-bundle", R, "Errors", MUST,
       "create of a bundle without config.json errors and leaves no container behind")
def create_bad_bundle(t):
    empty = t.new_dir("empty-bundle")
    c = t.container(args=["true"])
    r = t.runtime("create", "--bundle", empty, c.id)
    t.expect_error(r, "create of a bundle with no config.json")
    t.expect_gone(c, "after the failed create")


@check("lifecycle.create.failure-leaves-nothing", R, "Errors", MUST,
       "a create that fails (missing bind source) leaves no state and no cgroup behind")
def create_failure_clean(t):
    b = t.bundle(["true"])
    b.config["mounts"].append({"destination": "/mnt", "type": "bind",
                               "source": str(b.path / "does-not-exist"), "options": ["bind"]})
    b.write()
    c = t.container(b)
    r = c.create(check=False)
    t.expect_error(r, "create with a bind mount of a missing source")
    t.expect_gone(c, "after the failed create")
    name = b.config["linux"]["cgroupsPath"].strip("/")
    left = [os.path.join(top, name) for top in set(t.host.cgroup_mounts().values())
            if os.path.isdir(os.path.join(top, name))]
    t.expect(not left, f"cgroups left by the failed create: {left}")


@check("lifecycle.create.config-frozen", R, "Lifecycle", MUST,
       "changes to config.json after create do not affect the container")
def config_frozen(t):
    c = t.container(args=["sh", "-c", "echo original"])
    c.create()
    c.bundle.config["process"]["args"] = ["sh", "-c", "echo changed"]
    c.bundle.write()
    c.start()
    c.wait_status("stopped")
    t.expect_eq(c.output().strip(), "original", "output after editing config.json between create and start")


@check("lifecycle.start.twice", R, "Start", MUST,
       "start of a running container errors and has no effect on it")
def start_twice(t):
    c = t.sleeper()
    before = c.state()
    r = c.start(check=False)
    t.expect_error(r, "a second start")
    after = c.state()
    t.expect_eq((after["status"], after.get("pid")), ("running", before.get("pid")),
                "state after the second start")


@check("lifecycle.start.stopped", R, "Start", MUST,
       "start of a stopped container errors")
def start_stopped(t):
    c = t.container(args=["sh", "-c", "echo run >> /out/count"])
    c.create()
    c.start()
    c.wait_status("stopped")
    r = c.start(check=False)
    t.expect_error(r, "start of a stopped container")
    time.sleep(0.2)
    t.expect_eq(c.bundle.out_file("count"), "run\n", "times the program ran")
    t.expect_eq(c.status(), "stopped", "status")


@check("lifecycle.start.unknown-id", R, "Start", MUST, "start of an unknown id errors")
def start_unknown(t):
    t.expect_error(t.runtime("start", t.suite.cgroup_prefix + "nosuch"), "start of an unknown id")


@check("lifecycle.start.no-id", R, "Start", MUST, "start without an id errors")
def start_no_id(t):
    t.expect_error(t.runtime("start"), "start without an id")


@check("lifecycle.state.unknown-id", R, "Query State", MUST, "state of an unknown id errors")
def state_unknown(t):
    t.expect_error(t.runtime("state", t.suite.cgroup_prefix + "nosuch"), "state of an unknown id")


@check("lifecycle.state.no-id", R, "Query State", MUST, "state without an id errors")
def state_no_id(t):
    t.expect_error(t.runtime("state"), "state without an id")


def _validate_state(t, st: dict, c, want_status: str) -> None:
    t.expect(isinstance(st.get("ociVersion"), str) and st["ociVersion"], "ociVersion missing or not a string")
    t.expect_eq(st.get("id"), c.id, "state.id")
    t.expect(st.get("status") in STATUSES, f"status {st.get('status')!r} is not a spec status")
    t.expect_eq(st.get("status"), want_status, "state.status")
    t.expect(isinstance(st.get("bundle"), str) and os.path.isabs(st["bundle"]),
             f"bundle must be an absolute path, got {st.get('bundle')!r}")
    t.expect_eq(os.path.realpath(st["bundle"]), os.path.realpath(c.bundle.path), "state.bundle")
    if want_status in ("created", "running"):
        pid = st.get("pid")
        t.expect(isinstance(pid, int) and pid > 0, f"pid REQUIRED when {want_status}, got {pid!r}")
        t.expect(os.path.exists(f"/proc/{pid}"), f"state.pid {pid} is not a live process")
    if "annotations" in st:
        t.expect(isinstance(st["annotations"], dict), "annotations must be a map")


@check("lifecycle.state.document", R, "State", MUST,
       "state output carries ociVersion, id, status, pid and an absolute bundle in every status")
def state_document(t):
    c = t.container(args=["sleep", "1000"])
    c.create()
    _validate_state(t, c.state(), c, "created")
    c.start()
    _validate_state(t, c.state(), c, "running")
    c.kill("KILL")
    st = c.wait_status("stopped")
    _validate_state(t, st, c, "stopped")


@check("lifecycle.state.pid-is-container-process", R, "State", MUST,
       "state.pid is the host pid of the container process (it becomes the program)")
def state_pid(t):
    c = t.sleeper()
    pid = c.state()["pid"]
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    t.expect(argv[:2] == [b"sleep", b"1000"], f"/proc/{pid}/cmdline is {argv[:3]}, not the program")


@check("lifecycle.state.annotations", R, "State", MUST,
       "state.annotations holds the config's annotations")
def state_annotations(t):
    ann = {"org.example.conformance": "yes", "org.example.empty": ""}
    c = t.container(args=["true"], annotations=ann)
    c.create()
    t.expect_eq(c.state().get("annotations"), ann, "state.annotations")


@check("lifecycle.state.stopped-on-exit", R, "State", MUST,
       "when the process exits by itself the status becomes `stopped`")
def stopped_on_exit(t):
    c = t.container(args=["sh", "-c", "exit 3"])
    c.create()
    c.start()
    c.wait_status("stopped")


@check("lifecycle.kill.delivers", R, "Kill", MUST,
       "kill sends the named signal to the container process")
def kill_delivers(t):
    script = "trap 'echo got-term > /out/sig; exit 0' TERM; touch /out/ready; while :; do sleep 0.05; done"
    c = t.container(args=["sh", "-c", script])
    c.create()
    c.start()
    deadline = time.monotonic() + 5
    while not (c.bundle.out / "ready").exists():
        t.expect(time.monotonic() < deadline, "container never got ready")
        time.sleep(0.02)
    c.kill("TERM")
    c.wait_status("stopped")
    t.expect_eq(c.bundle.out_file("sig"), "got-term\n", "what the TERM trap recorded")


@check("lifecycle.kill.created", R, "Kill", MUST,
       "kill of a created container signals it (it is then stopped) without running the program")
def kill_created(t):
    c = t.container(args=["sh", "-c", "touch /out/ran"])
    c.create()
    c.kill("KILL")
    c.wait_status("stopped")
    t.expect(not (c.bundle.out / "ran").exists(), "the program ran after kill of a created container")


@check("lifecycle.kill.stopped", R, "Kill", MUST, "kill of a stopped container errors")
def kill_stopped(t):
    c = t.container(args=["true"])
    c.create()
    c.start()
    c.wait_status("stopped")
    t.expect_error(c.kill("KILL", check=False), "kill of a stopped container")
    t.expect_eq(c.status(), "stopped", "status")


@check("lifecycle.kill.unknown-id", R, "Kill", MUST, "kill of an unknown id errors")
def kill_unknown(t):
    t.expect_error(t.runtime("kill", t.suite.cgroup_prefix + "nosuch", "KILL"), "kill of an unknown id")


@check("lifecycle.delete.running", R, "Delete", MUST,
       "delete of a running container errors and has no effect on it")
def delete_running(t):
    c = t.sleeper()
    pid = c.state()["pid"]
    t.expect_error(c.delete(check=False), "delete of a running container")
    st = c.state()
    t.expect_eq((st["status"], st.get("pid")), ("running", pid), "state after the refused delete")


@check("lifecycle.delete.created", R, "Delete", MUST,
       "delete of a created (not stopped) container errors and has no effect on it")
def delete_created(t):
    # runtime.md, Delete: "Attempting to delete a container that is not stopped MUST have no
    # effect on the container and MUST generate an error."  runc deletes it instead.
    c = t.container(args=["true"])
    c.create()
    pid = c.state()["pid"]
    r = c.delete(check=False)
    if r.returncode == 0:
        raise Fail("delete of a created container succeeded; the container was removed")
    st = c.state()
    t.expect_eq((st["status"], st.get("pid")), ("created", pid), "state after the refused delete")


@check("lifecycle.delete.stopped", R, "Delete", MUST,
       "delete of a stopped container removes it and the cgroups it created")
def delete_stopped(t):
    c = t.container(args=["true"])
    c.create()
    pid = c.state()["pid"]
    dirs = {ctrl: t.host.cgroup_dir(pid, ctrl) for ctrl in ("memory", "pids", "devices", "unified")
            if t.host.controller_version(ctrl) or ctrl == "unified"}
    made = {k: d for k, d in dirs.items() if c.bundle.config["linux"]["cgroupsPath"] in d}
    c.start()
    c.wait_status("stopped")
    c.delete()
    t.expect_gone(c, "after delete")
    left = [d for d in made.values() if os.path.isdir(d)]
    t.expect(not left, f"cgroups still present after delete: {left}")


@check("lifecycle.delete.unknown-id", R, "Delete", MUST, "delete of an unknown id errors")
def delete_unknown(t):
    t.expect_error(t.runtime("delete", t.suite.cgroup_prefix + "nosuch"), "delete of an unknown id")


@check("lifecycle.delete.id-reusable", R, "Delete", SHOULD,
       "after delete the id can be used again (a MAY in the spec; every engine relies on it)")
def id_reusable(t):
    c = t.container(args=["true"])
    c.create()
    c.start()
    c.wait_status("stopped")
    c.delete()
    again = t.container(args=["true"])
    again.id = c.id
    again.create()


@check("lifecycle.start.no-process", R, "Start", MUST,
       "start errors when config.json has no `process`")
def no_process(t):
    b = t.bundle(["true"], process=None)
    c = t.container(b)
    r = c.create(check=False)
    if r.returncode != 0:
        t.note("create already refused the config without process: " + r.stderr.strip()[:200])
        return
    t.expect_error(c.start(check=False), "start without process")


@check("lifecycle.create.no-process", "config.md", "Process", SHOULD,
       "create accepts a config without `process` (it is OPTIONAL; only start needs it)")
def create_no_process(t):
    # SHOULD: config.md makes process OPTIONAL and REQUIRED only "when start is called", but
    # runtime.md also lets a runtime validate config.json up front, so refusing at create is
    # arguably allowed.
    c = t.container(t.bundle(["true"], process=None))
    c.create()
    t.expect_eq(c.status(), "created", "status")


@check("lifecycle.start.program-not-found", R, "Start", MUST,
       "a process.args[0] that does not exist makes create or start fail")
def program_not_found(t):
    c = t.container(args=["/no/such/program"])
    r = c.create(check=False)
    if r.returncode != 0:
        return
    r = c.start(check=False)
    t.expect_error(r, "start of a program that does not exist")
