#!/usr/bin/env python3
"""Side-by-side benchmarks: ocirun against runc (and crun where the host lets it run).

    .venv/bin/python bench/run.py [--runs N] [--quick] [--only 1,2,...] [--json FILE]
                                  [--markdown FILE] [--also NAME=EXECUTABLE]...

One busybox bundle is built (tools/mkrootfs.sh + `ocirun spec`, args /bin/true, terminal
false) and every runtime runs the same bundle, each with its own --root.  Runs alternate
between the runtimes (A B A B ...) so that drift of the machine hits both alike; each line of
the table gives the median and the 10th-90th percentile spread and the ratio ocirun/runc of
the medians.  Ratios, not absolute times, are the claim: this is a small, shared machine.

Sections (issue 6; sections 1-3 and 5 also give the CPU seconds of every process involved):
  1 run to exit              2 create + start + wait + delete     3 exec into a running container
  4 100 sequential runs      5 20 and 100 in parallel (wall time, and CPU seconds per lifecycle)
  6 list/state, 1,000 containers
  7 cost growth (binds, seccomp, netns)                           8 memory

The runtimes are started as real users start them: with byte-code caching on (this script
drops PYTHONDONTWRITEBYTECODE from their environment, which the development sandbox sets).
Must run as root.  Everything it makes lives in one temporary directory and is removed.
"""
from __future__ import annotations

import argparse
import copy
import ctypes
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OCIRUN = os.path.join(REPO, ".venv", "bin", "ocirun")
RUNC = "/usr/sbin/runc"
DOCKER_CONFIG = "/work/shared/fixtures/client-configs/docker-config.json"
if not os.path.exists(DOCKER_CONFIG):
    DOCKER_CONFIG = os.path.join(os.path.dirname(REPO), "shared", "fixtures", "client-configs",
                                 "docker-config.json")
PR_SET_CHILD_SUBREAPER = 36
GNU_TIME = "/usr/bin/time"  # Debian's `time` package: the peak-RSS row is skipped without it

ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


# ============================================================================ plumbing

class Failed(Exception):
    """A runtime command exited non-zero; the message carries its stderr."""


class Runtime:
    """One runtime binary with its own state root."""

    def __init__(self, name: str, binary: str, root: str):
        self.name = name
        self.binary = binary
        self.root = root

    def argv(self, *args: str) -> list[str]:
        return [self.binary, "--root", self.root, *args]

    def call(self, *args: str, cwd: str | None = None, check: bool = True) -> float:
        """Run one command to its end; return the seconds it took."""
        with tempfile.TemporaryFile() as err:
            t0 = time.perf_counter()
            rc = subprocess.call(self.argv(*args), cwd=cwd, env=ENV, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=err)
            elapsed = time.perf_counter() - t0
            if rc != 0 and check:
                err.seek(0)
                raise Failed(f"{self.name} {' '.join(args)}: exit {rc}: "
                             f"{err.read().decode(errors='replace').strip()[-300:]}")
        return elapsed

    def spawn(self, *args: str) -> subprocess.Popen:
        """Start one command; its stderr goes to a temporary file (`.err`), read by `finish`."""
        err = tempfile.TemporaryFile()
        p = subprocess.Popen(self.argv(*args), env=ENV, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=err)
        p.err, p.what = err, " ".join(args[:1])
        return p

    @staticmethod
    def finish(p: subprocess.Popen, messages: list[str]) -> bool:
        """Wait for a spawned command; on failure add its last stderr line to `messages`."""
        ok = p.wait() == 0
        if not ok:
            p.err.seek(0)
            lines = p.err.read().decode(errors="replace").strip().splitlines() or [f"exit {p.returncode}"]
            messages.append(f"{p.what}: {lines[-1][-200:]}")
        p.err.close()
        return ok

    def force_delete(self, cid: str) -> None:
        self.call("delete", "--force", cid, check=False)


_counter = 0


def new_id(tag: str) -> str:
    global _counter
    _counter += 1
    return f"bench-{tag}-{os.getpid()}-{_counter}"


def become_subreaper() -> None:
    """The container inits that `create` leaves behind are re-parented to us, so we can wait."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def wait_exit(pid: int) -> None:
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:  # reaped already, or never ours: wait until it is gone
        while os.path.exists(f"/proc/{pid}"):
            time.sleep(0.001)


def reap_orphans() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def read_pid(path: str) -> int:
    with open(path) as f:
        return int(f.read().strip())


class Stats:
    def __init__(self, samples: list[float]):
        self.samples = samples
        self.median = statistics.median(samples)
        if len(samples) >= 2:
            deciles = statistics.quantiles(samples, n=10, method="inclusive")
            self.p10, self.p90 = deciles[0], deciles[-1]
        else:
            self.p10 = self.p90 = samples[0]


def with_cpu(fn, cpu: list[float]):
    """`fn` (returns wall seconds) that also appends the CPU seconds of the processes reaped
    meanwhile (children_cpu): a row that drifts less than wall time on a shared host."""
    def timed():
        reap_orphans()
        before = children_cpu()
        wall = fn()
        reap_orphans()  # a runtime's helper processes re-parented to us count too (as in parallel())
        cpu.append(children_cpu() - before)
        return wall
    return timed


def alternate(fns: dict[str, callable], runs: int) -> dict[str, Stats]:
    """Call each runtime's function `runs` times, A B A B ...; each returns one sample."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            samples[name].append(fn())
    reap_orphans()
    return {name: Stats(s) for name, s in samples.items()}


# ============================================================================ the bundle

def make_bundle(work: str) -> str:
    bundle = os.path.join(work, "bundle")
    os.makedirs(bundle)
    subprocess.run([os.path.join(REPO, "tools", "mkrootfs.sh"), os.path.join(bundle, "rootfs")],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([OCIRUN, "spec", "--bundle", bundle], check=True, env=ENV)
    config = load_config(bundle)
    config["process"]["args"] = ["/bin/true"]
    config["process"]["terminal"] = False
    save_config(bundle, config)
    return bundle


def load_config(bundle: str) -> dict:
    with open(os.path.join(bundle, "config.json")) as f:
        return json.load(f)


def save_config(bundle: str, config: dict) -> None:
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(config, f, indent=2)


def variant(base: str, name: str, change) -> str:
    """A bundle beside `base` that shares its rootfs, with `change(config)` applied."""
    path = os.path.join(os.path.dirname(base), name)
    os.makedirs(path)
    config = copy.deepcopy(load_config(base))
    config["root"]["path"] = os.path.join(base, "rootfs")
    change(config)
    save_config(path, config)
    return path


# ============================================================================ measurements

def run_once(rt: Runtime, bundle: str) -> float:
    return rt.call("run", "--bundle", bundle, new_id("run"), cwd=bundle)


def lifecycle_once(rt: Runtime, bundle: str, work: str, parts: dict | None = None) -> float:
    """create + start + wait for the init to exit + delete; optional per-step times in `parts`."""
    cid = new_id("life")
    pidfile = os.path.join(work, cid + ".pid")
    t0 = time.perf_counter()
    rt.call("create", "--bundle", bundle, "--pid-file", pidfile, cid, cwd=bundle)
    t1 = time.perf_counter()
    rt.call("start", cid)
    t2 = time.perf_counter()
    wait_exit(read_pid(pidfile))
    t3 = time.perf_counter()
    rt.call("delete", cid)
    t4 = time.perf_counter()
    os.unlink(pidfile)
    if parts is not None:
        for step, dt in (("create", t1 - t0), ("start", t2 - t1), ("delete", t4 - t3)):
            parts.setdefault(step, []).append(dt)
    return t4 - t0


def start_sleeper(rt: Runtime, bundle: str, work: str) -> tuple[str, int]:
    cid = new_id("sleep")
    pidfile = os.path.join(work, cid + ".pid")
    rt.call("create", "--bundle", bundle, "--pid-file", pidfile, cid, cwd=bundle)
    rt.call("start", cid)
    return cid, read_pid(pidfile)


def stop_sleeper(rt: Runtime, cid: str, pid: int) -> None:
    rt.call("kill", cid, "KILL", check=False)
    wait_exit(pid)
    rt.call("delete", "--force", cid, check=False)


def sequential_100(rt: Runtime, bundle: str, count: int) -> float:
    t0 = time.perf_counter()
    for _ in range(count):
        run_once(rt, bundle)
    return time.perf_counter() - t0


def children_cpu() -> float:
    """User+system seconds of every process this one has reaped so far.  The bench is a
    subreaper: the runtimes' own children (runc init, ocirun's intermediate and init) and the
    containers' processes end up reaped here too, so their time counts."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def parallel(rt: Runtime, bundle: str, work: str, count: int, messages: list[str],
             cpu: list[float] | None = None) -> tuple[float, int]:
    """`count` creates at once, then `count` starts, wait for every init, `count` deletes.
    Returns (seconds, number of commands that failed); their stderr goes to `messages`, and the
    CPU seconds per lifecycle (see children_cpu) are appended to `cpu`."""
    ids = [new_id(f"par{count}") for _ in range(count)]
    pidfiles = {cid: os.path.join(work, cid + ".pid") for cid in ids}
    reap_orphans()
    cpu0 = children_cpu()
    t0 = time.perf_counter()
    procs = [rt.spawn("create", "--bundle", bundle, "--pid-file", pidfiles[cid], cid) for cid in ids]
    created = [cid for cid, p in zip(ids, procs, strict=True) if rt.finish(p, messages)]
    procs = [rt.spawn("start", cid) for cid in created]
    started = [cid for cid, p in zip(created, procs, strict=True) if rt.finish(p, messages)]
    for cid in started:
        wait_exit(read_pid(pidfiles[cid]))
    procs = [rt.spawn("delete", cid) for cid in started]
    for p in procs:
        rt.finish(p, messages)
    elapsed = time.perf_counter() - t0
    errors = len(messages)
    for cid in ids:  # whatever a failure left behind
        if os.path.isdir(os.path.join(rt.root, cid)):
            rt.force_delete(cid)
        if os.path.exists(pidfiles[cid]):
            os.unlink(pidfiles[cid])
    reap_orphans()
    if cpu is not None:
        cpu.append((children_cpu() - cpu0) / count)
    return elapsed, errors


def fill_state_root(rt: Runtime, bundle: str, work: str, count: int) -> tuple[str, int, list[str]]:
    """One real container in `created`, and `count - 1` copies of its state directory (same
    state.json but for the id, a fresh exec.fifo): every one reads as a live, created container,
    and `list` does for each what it does for a real one.  Creating 1,000 real ones would take
    1,000 resident Python inits for ocirun; the copies keep both runtimes on equal terms."""
    cid = new_id("list")
    pidfile = os.path.join(work, cid + ".pid")
    rt.call("create", "--bundle", bundle, "--pid-file", pidfile, cid, cwd=bundle)
    src = os.path.join(rt.root, cid)
    with open(os.path.join(src, "state.json")) as f:
        state = json.load(f)
    copies = []
    for i in range(count - 1):
        copy_id = f"{cid}-copy{i}"
        dst = os.path.join(rt.root, copy_id)
        os.mkdir(dst, 0o711)
        state["id"] = copy_id
        with open(os.path.join(dst, "state.json"), "w") as f:
            json.dump(state, f)
        os.mkfifo(os.path.join(dst, "exec.fifo"), 0o622)
        copies.append(copy_id)
    return cid, read_pid(pidfile), copies


def cgroup_of(pid: int, controller: str) -> str:
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                return f"/sys/fs/cgroup/{controller}{path}"
    raise RuntimeError(f"pid {pid} has no {controller} cgroup")


def memory_charged(rt: Runtime, bundle: str, work: str) -> float:
    """Peak memory charged to the container's memory cgroup while it runs /bin/true (bytes),
    read after the init exited and before delete removes the cgroup."""
    cid = new_id("mem")
    pidfile = os.path.join(work, cid + ".pid")
    rt.call("create", "--bundle", bundle, "--pid-file", pidfile, cid, cwd=bundle)
    pid = read_pid(pidfile)
    cgroup = cgroup_of(pid, "memory")
    rt.call("start", cid)
    wait_exit(pid)
    with open(os.path.join(cgroup, "memory.max_usage_in_bytes")) as f:
        peak = int(f.read())
    rt.call("delete", cid)
    os.unlink(pidfile)
    return float(peak)


def runtime_peak_rss(rt: Runtime, bundle: str) -> float:
    """Peak resident set (bytes) of `run`: the runtime process and the descendants it waited for.

    Measured by GNU time (`%M`), not by our own wait4: Linux carries a parent's RSS high-water
    mark into a forked child and across its execve, so every child of this Python process would
    report at least our own ~16 MiB.  time's children are forked from a small process."""
    out = os.path.join(os.path.dirname(bundle), f"rss-{rt.name}.txt")
    cmd = [GNU_TIME, "-f", "%M", "-o", out] + rt.argv("run", "--bundle", bundle, new_id("rss"))
    r = subprocess.run(cmd, cwd=bundle, env=ENV, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    if r.returncode != 0:
        raise Failed(f"{rt.name} run: exit {r.returncode}")
    with open(out) as f:
        return int(f.read().split()[-1]) * 1024.0


def starts_under_limit(rt: Runtime, base: str, limit: int, tries: int = 2) -> bool:
    bundle = os.path.join(os.path.dirname(base), f"memlimit-{rt.name}")
    config = load_config(base)
    config["root"]["path"] = os.path.join(base, "rootfs")
    config["linux"].setdefault("resources", {})["memory"] = {"limit": limit}
    os.makedirs(bundle, exist_ok=True)
    save_config(bundle, config)
    for _ in range(tries):
        cid = new_id("lim")
        try:
            rt.call("run", "--bundle", bundle, cid, cwd=bundle)
        except Failed:
            rt.force_delete(cid)
            reap_orphans()
            return False
    return True


def smallest_memory_limit(rt: Runtime, base: str, step: int = 64 * 1024) -> int | None:
    """Binary search (to `step`) for the smallest memory.limit at which `run /bin/true` succeeds."""
    lo, hi = step, 128 * 1024 * 1024
    if not starts_under_limit(rt, base, hi):
        return None
    while hi - lo > step:
        mid = (lo + hi) // 2 // step * step
        if starts_under_limit(rt, base, mid):
            hi = mid
        else:
            lo = mid
    return hi


# ============================================================================ report

class Table:
    def __init__(self, names: list[str]):
        self.names = names
        self.rows: list[tuple[str, dict[str, str], str]] = []
        self.data: list[dict] = []

    def add(self, label: str, stats: dict[str, Stats], unit: str = "ms", note: str = "") -> None:
        scale, fmt = {"ms": (1e3, "{:.1f}"), "s": (1.0, "{:.2f}"), "MiB": (1 / 2**20, "{:.1f}")}[unit]
        cells = {}
        for name in self.names:
            s = stats.get(name)
            if s is None:
                cells[name] = "-"
            elif len(s.samples) > 1:
                cells[name] = (f"{fmt.format(s.median * scale)} "
                               f"[{fmt.format(s.p10 * scale)}-{fmt.format(s.p90 * scale)}] {unit}")
            else:
                cells[name] = f"{fmt.format(s.median * scale)} {unit}"
        ratio = "-"
        if "ocirun" in stats and "runc" in stats and stats["runc"].median:
            ratio = f"{stats['ocirun'].median / stats['runc'].median:.2f}"
        self.rows.append((label, cells, ratio + (f"  {note}" if note else "")))
        self.data.append({"label": label, "unit": unit, "note": note,
                          **{n: {"median": s.median, "p10": s.p10, "p90": s.p90, "n": len(s.samples)}
                             for n, s in stats.items()}})
        print(f"  {label}: " + "; ".join(f"{n} {c}" for n, c in cells.items()) + f"; ratio {ratio} {note}",
              flush=True)

    def markdown(self) -> str:
        head = "| measurement | " + " | ".join(self.names) + " | ocirun/runc |"
        sep = "|---" * (len(self.names) + 2) + "|"
        lines = [head, sep]
        for label, cells, ratio in self.rows:
            lines.append(f"| {label} | " + " | ".join(cells[n] for n in self.names) + f" | {ratio} |")
        return "\n".join(lines)


def fixed(value: float) -> Stats:
    return Stats([value])


# ============================================================================ main

def probe_crun(work: str, bundle: str) -> tuple[Runtime | None, str]:
    binary = shutil.which("crun")
    if binary is None:
        return None, "crun is not installed (and crun refuses hybrid cgroup hosts)"
    rt = Runtime("crun", binary, os.path.join(work, "root-crun"))
    try:
        run_once(rt, bundle)
    except Failed as e:
        return None, f"crun refuses hybrid cgroup hosts ({e})"
    return rt, ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30, help="samples per measurement (default 30)")
    ap.add_argument("--quick", action="store_true", help="few runs, smaller counts: a smoke test")
    ap.add_argument("--only", default="1,2,3,4,5,6,7,8", help="sections to run, e.g. 1,2")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    ap.add_argument("--markdown", help="also write the table as Markdown to this file")
    ap.add_argument("--also", action="append", default=[], metavar="NAME=EXECUTABLE",
                    help="one more runtime in the rotation, e.g. an older ocirun to compare a change")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/run.py must run as root")
    runs = 5 if a.quick and a.runs == 30 else a.runs
    only = {int(x) for x in a.only.split(",")}
    become_subreaper()

    work = tempfile.mkdtemp(prefix="ocirun-bench-")
    try:
        return measure(work, runs, only, a)
    finally:
        reap_orphans()
        shutil.rmtree(work, ignore_errors=True)


def shebang(binary: str) -> str | None:
    """The `#!` line of a script (ocirun's), None for a compiled binary (runc's)."""
    with open(binary, "rb") as f:
        head = f.readline(512)
    return head.decode(errors="replace").rstrip("\n") if head.startswith(b"#!") else None


def measure(work: str, runs: int, only: set[int], a) -> int:
    bundle = make_bundle(work)
    runtimes = [Runtime("ocirun", OCIRUN, os.path.join(work, "root-ocirun")),
                Runtime("runc", RUNC, os.path.join(work, "root-runc"))]
    crun, why = probe_crun(work, bundle)
    if crun is not None:
        runtimes.append(crun)
    for extra in a.also:
        name, _, binary = extra.partition("=")
        runtimes.append(Runtime(name, os.path.abspath(binary), os.path.join(work, f"root-{name}")))
    names = [rt.name for rt in runtimes]
    table = Table(names)
    skipped = [] if crun else [f"skipped crun: {why}"]
    print(f"runtimes: {', '.join(names)}; {runs} runs each, alternating"
          + (f"; {skipped[0]}" if skipped else ""), flush=True)
    for rt in runtimes:  # a script's #! line says how its interpreter starts (-IS: ocirun.launcher)
        line = shebang(rt.binary)
        if line:
            print(f"  {rt.name}: {line}", flush=True)
    for rt in runtimes:  # warm the page cache, byte-code caches and seccomp cache
        for _ in range(2):
            run_once(rt, bundle)

    def each(fn):
        return {rt.name: (lambda rt=rt: fn(rt)) for rt in runtimes}

    def each_with_cpu(fn, cpu):
        return {rt.name: with_cpu(lambda rt=rt: fn(rt), cpu[rt.name]) for rt in runtimes}

    def cpu_row(label, cpu):
        table.add(label, {n: Stats(c) for n, c in cpu.items()})

    if 1 in only:
        cpu = {rt.name: [] for rt in runtimes}
        table.add("1. run /bin/true to exit", alternate(each_with_cpu(lambda rt: run_once(rt, bundle), cpu), runs))
        cpu_row("1. ... CPU (user+sys, all processes)", cpu)

    if 2 in only:
        parts = {rt.name: {} for rt in runtimes}
        cpu = {rt.name: [] for rt in runtimes}
        stats = alternate(each_with_cpu(lambda rt: lifecycle_once(rt, bundle, work, parts[rt.name]), cpu), runs)
        table.add("2. create+start+wait+delete", stats)
        cpu_row("2. ... CPU (user+sys, all processes)", cpu)
        for step in ("create", "start", "delete"):
            table.add(f"2. ... {step} alone", {n: Stats(parts[n][step]) for n in names})

    if 3 in only:
        sleeper = variant(bundle, "sleeper", lambda c: c["process"].update(args=["sleep", "1000000"]))
        running = {rt.name: start_sleeper(rt, sleeper, work) for rt in runtimes}
        cpu = {rt.name: [] for rt in runtimes}
        try:
            stats = alternate(each_with_cpu(lambda rt: rt.call("exec", running[rt.name][0], "/bin/true"), cpu),
                              runs)
        finally:
            for rt in runtimes:
                stop_sleeper(rt, *running[rt.name])
        table.add("3. exec /bin/true into a running container", stats)
        cpu_row("3. ... CPU (user+sys, all processes)", cpu)

    if 4 in only:
        count, rounds = (20, 1) if a.quick else (100, 3)
        stats = alternate(each(lambda rt: sequential_100(rt, bundle, count)), rounds)
        table.add(f"4. {count} sequential runs ({rounds} rounds)", stats, unit="s")

    if 5 in only:
        for count in ((20,) if a.quick else (20, 100)):
            rounds = 1 if a.quick else 3
            messages = {rt.name: [] for rt in runtimes}
            cpu = {rt.name: [] for rt in runtimes}

            def par(rt, count=count, messages=messages, cpu=cpu):
                return parallel(rt, bundle, work, count, messages[rt.name], cpu[rt.name])[0]
            stats = alternate(each(par), rounds)
            table.add(f"5. {count} parallel create/start/wait/delete ({rounds} rounds)", stats, unit="s",
                      note="errors: " + ", ".join(f"{n} {len(m)}" for n, m in messages.items()))
            table.add(f"5. ... CPU per lifecycle at {count} parallel (user+sys, all processes)",
                      {n: Stats(c) for n, c in cpu.items()})
            for name, m in messages.items():
                for line in sorted(set(m))[:5]:
                    print(f"    {name} error: {line}")
                    skipped.append(f"({count} parallel) {name} error: {line}")

    if 6 in only:
        count = 100 if a.quick else 1000
        filled = {rt.name: fill_state_root(rt, bundle, work, count) for rt in runtimes}
        try:
            table.add(f"6. list with {count} containers",
                      alternate(each(lambda rt: rt.call("list")), runs))
            table.add(f"6. state of one with {count} present",
                      alternate(each(lambda rt: rt.call("state", filled[rt.name][0])), runs))
        finally:
            for rt in runtimes:
                cid, pid, copies = filled[rt.name]
                for copy_id in copies:  # never through the runtime: they share the real one's cgroup
                    shutil.rmtree(os.path.join(rt.root, copy_id), ignore_errors=True)
                rt.call("delete", "--force", cid, check=False)
                wait_exit(pid)

    if 7 in only:
        src = os.path.join(work, "bind-src")
        os.makedirs(src)

        def binds(n):
            def change(c):
                c["mounts"] += [{"destination": f"/mnt/b{i}", "type": "bind", "source": src,
                                 "options": ["rbind", "ro"]} for i in range(n)]
            return change

        cases = [
            ("1 bind mount", variant(bundle, "binds1", binds(1))),
            ("100 bind mounts", variant(bundle, "binds100", binds(100))),
        ]
        if os.path.exists(DOCKER_CONFIG):
            with open(DOCKER_CONFIG) as f:
                docker_seccomp = json.load(f)["linux"]["seccomp"]
            cases.append(("docker's default seccomp profile", variant(
                bundle, "seccomp", lambda c: c["linux"].update(seccomp=docker_seccomp))))
        else:
            skipped.append(f"skipped the seccomp row: {DOCKER_CONFIG} not found")
        cases += [
            ("no network namespace", variant(bundle, "nonetns", lambda c: c["linux"].update(
                namespaces=[n for n in c["linux"]["namespaces"] if n["type"] != "network"]))),
        ]
        table.add("7. run, base config (netns, no seccomp)",
                  alternate(each(lambda rt: run_once(rt, bundle)), runs))
        for label, b in cases:
            for rt in runtimes:
                run_once(rt, b)  # warm (the seccomp cache, the mount points)
            table.add(f"7. run, {label}", alternate(each(lambda rt, b=b: run_once(rt, b)), runs))

    if 8 in only:
        n = max(5, runs // 3)
        if os.access(GNU_TIME, os.X_OK):
            table.add("8. peak RSS of the runtime (`run`, GNU time %M)",
                      alternate(each(lambda rt: runtime_peak_rss(rt, bundle)), n), unit="MiB")
        else:
            print(f"skipped the peak RSS row: {GNU_TIME} not found (apt-get install time)", file=sys.stderr)
        table.add("8. memory charged to the container (max_usage_in_bytes)",
                  alternate(each(lambda rt: memory_charged(rt, bundle, work)), n), unit="MiB")
        smallest = {}
        for rt in runtimes:
            limit = smallest_memory_limit(rt, bundle, step=(256 if a.quick else 64) * 1024)
            if limit is not None:
                smallest[rt.name] = fixed(float(limit))
        table.add("8. smallest memory limit that still starts", smallest, unit="MiB",
                  note="(64 KiB steps)" if not a.quick else "(256 KiB steps)")

    print()
    print(table.markdown())
    for s in skipped:
        print(f"\n{s}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"runs": runs, "skipped": skipped, "rows": table.data}, f, indent=2)
    if a.markdown:
        with open(a.markdown, "w") as f:
            f.write(table.markdown() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
