"""The systemd cgroup driver's rules, without any D-Bus: names, paths and unit properties.

With `--systemd-cgroup` the container's cgroup is a transient *scope unit* that systemd makes
for us (`systemd_manager.py` asks for it over D-Bus).  What this module decides:

* `unit_for(id, linux.cgroupsPath)`: "slice:prefix:name" -> the slice and the unit name
  "<prefix>-<name>.scope" (runc's rules: an empty slice is system.slice, an empty path is
  ":ocirun:<id>"; anything without exactly two colons is refused, naming the field).
* `expand_slice("kubepods-besteffort-pod1.slice")` -> the slice's cgroup path,
  "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice": systemd's
  dash-means-parent naming, which is also how the scope's cgroup directory is found.
* `resource_properties(linux.resources)`: the limits systemd itself understands, as unit
  properties, so that a `systemctl daemon-reload` (which re-applies every unit's own
  settings to its cgroup) keeps them.  The cgroup files are written as well, by the cgroupfs
  code, exactly as without systemd (runc does both too): those are what the kernel enforces
  between now and the next reload, and they cover what systemd has no property for.
* `device_properties(policy)`: the device policy in systemd's words (DevicePolicy=strict and
  a DeviceAllow list); None when systemd cannot say it (a deny rule under an allow-all).
* `annotation_properties(annotations)`: `org.systemd.property.<Name>` annotations as unit
  properties, their values in GVariant text ("uint64 5000000", "true", "'inactive'").

A D-Bus value here is jeepney's variant shape, a (signature, value) pair: ("t", 5).
"""
from __future__ import annotations

from ..errors import ConfigError

FIELD = "linux.cgroupsPath"
DEFAULT_SLICE = "system.slice"
USER_SLICE = "user.slice"      # rootless: in the user's own systemd
DEFAULT_PREFIX = "ocirun"
UINT64_MAX = 2**64 - 1
DEFAULT_CPU_PERIOD_US = 100000
# systemd versions that first understood a property (older ones get only the cgroup files).
CPU_QUOTA_PERIOD_VERSION = 242
ALLOWED_CPUS_VERSION = 244
CPU_IDLE_VERSION = 252

# systemd's unit_name_is_valid(): letters, digits and ":-_.\" (no "@": we make no instances).
# Plain sets, not `re`: this module loads for every command on a systemd-driven container.
_UNIT_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:_.\\-")
_UNIT_NAME_MAX = 255


def valid_unit_text(text: str) -> bool:
    return bool(text) and set(text) <= _UNIT_CHARS


class Unit:
    """Where the container's scope goes: its slice and its own unit name."""

    __slots__ = ("slice", "name")

    def __init__(self, slice_: str, name: str) -> None:
        self.slice = slice_
        self.name = name

    def cgroup(self) -> str:
        """The scope's cgroup path below the hierarchy's root, e.g. /system.slice/x-1.scope."""
        return expand_slice(self.slice).rstrip("/") + "/" + self.name

    def __repr__(self) -> str:
        return f"Unit({self.slice!r}, {self.name!r})"


def unit_for(container_id: str, cgroups_path: str, default_slice: str = DEFAULT_SLICE) -> Unit:
    """`linux.cgroupsPath` in the systemd driver's form -> the scope to make."""
    if not cgroups_path:
        slice_, prefix, name = "", DEFAULT_PREFIX, container_id
    else:
        parts = cgroups_path.split(":")
        if len(parts) != 3:
            raise ConfigError(FIELD, f"{cgroups_path!r}: the systemd cgroup driver expects \"slice:prefix:name\" "
                              f"(e.g. \"system.slice:ocirun:{container_id}\")")
        slice_, prefix, name = parts
    slice_ = slice_ or default_slice
    if not name:
        raise ConfigError(FIELD, f"{cgroups_path!r}: the unit name part (after the second colon) is empty")
    if name.endswith(".slice"):
        raise ConfigError(FIELD, f"{cgroups_path!r}: a slice as the container's own unit is not supported; "
                          "give a scope name")
    unit = f"{prefix}-{name}.scope" if prefix else f"{name}.scope"
    if not valid_unit_text(unit) or len(unit) > _UNIT_NAME_MAX:
        raise ConfigError(FIELD, f"{cgroups_path!r}: {unit!r} is not a valid systemd unit name "
                          "(letters, digits and \":-_.\\\" only, at most 255 characters)")
    expand_slice(slice_, cgroups_path)  # refuse a bad slice now, before anything is made
    return Unit(slice_, unit)


def expand_slice(slice_: str, cgroups_path: str | None = None) -> str:
    """"a-b.slice" -> "/a.slice/a-b.slice"; "-.slice" (the root slice) -> "/"."""
    def bad(why: str) -> ConfigError:
        return ConfigError(FIELD, f"{cgroups_path or slice_!r}: invalid slice name {slice_!r} ({why})")
    if not slice_.endswith(".slice") or len(slice_) <= len(".slice"):
        raise bad("a slice name ends in \".slice\"")
    if "/" in slice_ or not valid_unit_text(slice_):
        raise bad("letters, digits and \":-_.\\\" only")
    stem = slice_[:-len(".slice")]
    if stem == "-":
        return "/"
    path, prefix = "", ""
    for part in stem.split("-"):
        if not part:
            raise bad("an empty part between dashes")
        path += f"/{prefix}{part}.slice"
        prefix += part + "-"
    return path


# ============================================================================ properties

def base_properties(container_id: str, unit: Unit, pid: int) -> list:
    """What every container scope gets (runc's set): its slice, the pid that starts it,
    delegation (the container may make sub-cgroups, and systemd leaves its files to us),
    accounting, and no default dependencies (a scope for a container must not be ordered
    after or stopped with other units)."""
    return [
        ("Description", ("s", f"ocirun container {container_id}")),
        ("Slice", ("s", unit.slice)),
        ("Delegate", ("b", True)),
        ("PIDs", ("au", [pid])),
        ("MemoryAccounting", ("b", True)),
        ("CPUAccounting", ("b", True)),
        ("IOAccounting", ("b", True)),
        ("TasksAccounting", ("b", True)),
        ("DefaultDependencies", ("b", False)),
    ]


def resource_properties(res: dict, version: int) -> list:
    """linux.resources -> the unit properties systemd understands (version: systemd's own).

    May adjust res["cpu"]["quota"] in place, as runc does: systemd keeps CPU quotas in steps
    of 10 ms per second, so the quota written to cpu.max is rounded up the same way, and a
    later daemon-reload changes nothing."""
    from .v2 import cpu_weight, io_weight, swap_max
    props: list = []
    mem = res.get("memory") or {}
    limit, reservation, swap = mem.get("limit") or 0, mem.get("reservation") or 0, mem.get("swap") or 0
    if limit:
        props.append(("MemoryMax", ("t", _u64(limit))))
    if reservation:
        props.append(("MemoryLow", ("t", _u64(reservation))))
    if swap or limit:
        sw = swap_max(swap, limit)
        if sw:
            props.append(("MemorySwapMax", ("t", _u64(sw))))
    cpu = res.get("cpu") or {}
    if cpu.get("idle") == 1 and version >= CPU_IDLE_VERSION:
        props.append(("CPUWeight", ("t", 0)))
    elif cpu.get("shares"):
        props.append(("CPUWeight", ("t", cpu_weight(cpu["shares"]))))
    props += _cpu_quota(cpu, version)
    if version >= ALLOWED_CPUS_VERSION:
        for key, name in (("cpus", "AllowedCPUs"), ("mems", "AllowedMemoryNodes")):
            if cpu.get(key):
                props.append((name, ("ay", range_to_bits(cpu[key], f"linux.resources.cpu.{key}"))))
    pids = (res.get("pids") or {}).get("limit") or 0
    if pids:
        props.append(("TasksMax", ("t", UINT64_MAX if pids < 0 else pids)))
    weight = (res.get("blockIO") or {}).get("weight") or 0
    if weight:
        props.append(("IOWeight", ("t", io_weight(weight))))
    if isinstance(res.get("unified"), dict):
        props += _unified_properties(res["unified"], version)
    return props


def _u64(v: int) -> int:
    return UINT64_MAX if v < 0 else v


def _cpu_quota(cpu: dict, version: int) -> list:
    quota, period = cpu.get("quota") or 0, cpu.get("period") or 0
    props: list = []
    if period and version >= CPU_QUOTA_PERIOD_VERSION:
        props.append(("CPUQuotaPeriodUSec", ("t", period)))
    if quota or period:
        per_sec = UINT64_MAX
        if quota > 0:
            period = period or DEFAULT_CPU_PERIOD_US
            per_sec = quota * 1_000_000 // period
            if per_sec % 10_000:
                per_sec = (per_sec // 10_000 + 1) * 10_000
                cpu["quota"] = per_sec * period // 1_000_000
        props.append(("CPUQuotaPerSecUSec", ("t", per_sec)))
    return props


_UNIFIED_MEMORY = {"memory.high": "MemoryHigh", "memory.low": "MemoryLow", "memory.min": "MemoryMin",
                   "memory.max": "MemoryMax", "memory.swap.max": "MemorySwapMax"}


def _unified_properties(unified: dict, version: int) -> list:
    """The linux.resources.unified keys systemd has a property for (the rest: files only).
    A cpu.max quota is rounded in `unified` itself, as cpu.quota is (the caller's copy)."""
    props: list = []
    for key, raw in unified.items():
        field = f"linux.resources.unified[{key!r}]"
        v = str(raw).strip()
        if key in _UNIFIED_MEMORY or key == "pids.max":
            n = UINT64_MAX if v == "max" else _uint(v, field)
            if key == "pids.max":
                props.append(("TasksMax", ("t", n or 1)))  # systemd refuses TasksMax=0
            else:
                props.append((_UNIFIED_MEMORY[key], ("t", n)))
        elif key == "cpu.weight" and str(unified.get("cpu.idle", "")).strip() != "1":
            props.append(("CPUWeight", ("t", _uint(v, field))))
        elif key == "cpu.idle" and v == "1" and version >= CPU_IDLE_VERSION:
            props.append(("CPUWeight", ("t", 0)))
        elif key == "cpu.max":
            parts = v.split()
            if not 1 <= len(parts) <= 2:
                raise ConfigError(field, f"{v!r} is not \"QUOTA [PERIOD]\"")
            cpu = {"quota": -1 if parts[0] == "max" else _uint(parts[0], field),
                   "period": _uint(parts[1], field) if len(parts) == 2 else DEFAULT_CPU_PERIOD_US}
            props += _cpu_quota(cpu, version)
            if parts[0] != "max":  # the file gets the quota as systemd rounds it (see _cpu_quota)
                unified[key] = f"{cpu['quota']} {cpu['period']}"
        elif key in ("cpuset.cpus", "cpuset.mems") and version >= ALLOWED_CPUS_VERSION:
            name = "AllowedCPUs" if key == "cpuset.cpus" else "AllowedMemoryNodes"
            props.append((name, ("ay", range_to_bits(v, field))))
    return props


def _uint(v: str, field: str) -> int:
    if not v.isdigit():
        raise ConfigError(field, f"{v!r} is not a number")
    return int(v)


def range_to_bits(text: str, field: str) -> bytes:
    """"0-2,7" -> the CPU (or node) bitmask systemd's AllowedCPUs takes: bytes, lowest first."""
    mask = 0
    for part in text.strip().split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ConfigError(field, f"{text!r} is not a list of numbers and ranges such as \"0-2,7\"")
        a, b = int(lo), int(hi) if sep else int(lo)
        if b < a or b > 65535:
            raise ConfigError(field, f"{text!r}: range {part.strip()!r} is empty or too large")
        mask |= ((1 << (b - a + 1)) - 1) << a
    return mask.to_bytes((mask.bit_length() + 7) // 8 or 1, "little")


# ============================================================================ devices

def device_properties(policy, proc_devices: str | None = None) -> list | None:
    """The device policy as DevicePolicy + DeviceAllow, or None if systemd cannot express it.

    systemd only allow-lists: a policy that denies by default with allowed exceptions maps
    onto "strict" plus one DeviceAllow entry per exception; allow-all maps onto "auto" with no
    list (systemd then filters nothing).  A whole major is named through /proc/devices
    ("char-pts"), as systemd wants it; a major with no name there cannot be said.  Our own
    eBPF filter is attached as well; an access has to pass both, and systemd's list is never
    narrower than ours, so the container sees exactly our policy."""
    from .devices import WILDCARD
    if policy.default_allow:
        return None if policy.exceptions else [("DevicePolicy", ("s", "auto")), ("DeviceAllow", ("a(ss)", []))]
    names = None
    allow = []
    for (kind, major, minor), access in sorted(policy.exceptions.items()):
        word = {"c": "char", "b": "block"}.get(kind)
        if word is None:
            return None
        if major == WILDCARD:
            if minor != WILDCARD:
                return None
            allow.append((f"{word}-*", access))
        elif minor == WILDCARD:
            if names is None:
                names = _device_names(proc_devices)
            name = names.get((word, major))
            if name is None:
                return None
            allow.append((f"{word}-{name}", access))
        else:
            allow.append((f"/dev/{word}/{major}:{minor}", access))
    return [("DevicePolicy", ("s", "strict")), ("DeviceAllow", ("a(ss)", allow))]


def _device_names(text: str | None) -> dict[tuple[str, int], str]:
    """/proc/devices: ("char", 136) -> "pts"."""
    if text is None:
        try:
            with open("/proc/devices") as f:
                text = f.read()
        except OSError:
            return {}
    out: dict[tuple[str, int], str] = {}
    section = None
    for line in text.splitlines():
        if line.startswith("Character"):
            section = "char"
        elif line.startswith("Block"):
            section = "block"
        else:
            fields = line.split()
            if section and len(fields) == 2 and fields[0].isdigit():
                out.setdefault((section, int(fields[0])), fields[1])
    return out


# ============================================================================ annotations

ANNOTATION_PREFIX = "org.systemd.property."
_TYPE_WORDS = {"boolean": "b", "byte": "y", "int16": "n", "uint16": "q", "int32": "i", "uint32": "u",
               "int64": "x", "uint64": "t", "double": "d", "string": "s", "objectpath": "o"}
_INT_RANGES = {"y": (0, 255), "n": (-2**15, 2**15 - 1), "q": (0, 2**16 - 1), "i": (-2**31, 2**31 - 1),
               "u": (0, 2**32 - 1), "x": (-2**63, 2**63 - 1), "t": (0, UINT64_MAX)}


def annotation_properties(annotations: dict) -> list:
    """`org.systemd.property.<Name>` annotations -> unit properties (runc's rules: the name is
    letters only and starts upper-case; "…Sec" names with a number become "…USec" in µs)."""
    props = []
    for key in sorted(annotations):
        if not key.startswith(ANNOTATION_PREFIX):
            continue
        name = key[len(ANNOTATION_PREFIX):]
        field = f"annotations[{key!r}]"
        if not (len(name) >= 3 and name.isascii() and name.isalpha() and name[0].isupper()):
            raise ConfigError(field, f"{name!r} is not a systemd property name (letters only, "
                              "starting upper-case, e.g. TimeoutStopUSec)")
        sig, value = parse_variant(annotations[key], field)
        if name.endswith("Sec") and name[-4:-3].islower():
            if sig not in _INT_RANGES and sig != "d":
                raise ConfigError(field, f"{name} takes a number of seconds")
            assert isinstance(value, (int, float))  # what parse_variant gives for those signatures
            name, sig, value = name[:-3] + "USec", "t", int(value * 1_000_000)
            if value < 0:
                raise ConfigError(field, "a negative time")
        props.append((name, (sig, value)))
    return props


def parse_variant(text, field: str) -> tuple[str, object]:
    """A value in GVariant's text format, the subset unit properties use: true/false, numbers
    with an optional type word or "@t"-style prefix ("uint64 10", "@t 10"; a bare integer is
    an int32, as GVariant reads it), 'quoted' or "quoted" strings, and ['a', 'b'] string lists."""
    if not isinstance(text, str):
        raise ConfigError(field, "must be a string")
    s = text.strip()
    sig = None
    word, _, rest = s.partition(" ")
    if word in _TYPE_WORDS:
        sig, s = _TYPE_WORDS[word], rest.strip()
    elif len(word) == 2 and word[0] == "@" and word[1] in "bynqiuxtdso":
        sig, s = word[1], rest.strip()
    try:
        return _parse_value(s, sig)
    except ValueError as e:
        raise ConfigError(field, f"{text!r}: {e} (GVariant text, e.g. \"uint64 5000000\", \"true\", "
                          "\"'inactive-or-failed'\")") from None


def _parse_value(s: str, sig: str | None) -> tuple[str, object]:
    if s in ("true", "false") and sig in (None, "b"):
        return "b", s == "true"
    if s[:1] in ("'", '"') and sig in (None, "s", "o"):
        return sig or "s", _unquote(s)
    if s.startswith("[") and s.endswith("]") and sig is None:
        inner = s[1:-1].strip()
        items = _split_list(inner) if inner else []
        return "as", [_unquote(i.strip()) for i in items]
    if sig in (None, "d") and "." in s and _is_float(s):
        return "d", float(s)
    if s.removeprefix("-").isdigit() and s.isascii():
        sig = sig or "i"
        if sig == "d":
            return "d", float(s)
        lo_hi = _INT_RANGES.get(sig)
        if lo_hi is None:
            raise ValueError(f"a number where the type is {sig!r}")
        if not lo_hi[0] <= int(s) <= lo_hi[1]:
            raise ValueError(f"{s} is out of range for its type")
        return sig, int(s)
    raise ValueError("not a value this runtime can read")


def _is_float(s: str) -> bool:
    """"-1.5", "2.", "1.0e3": digits around one dot, an optional exponent (GVariant's doubles)."""
    mantissa, _, exponent = s.lower().partition("e")
    whole, _, frac = mantissa.removeprefix("-").partition(".")
    return (whole.isdigit() and (frac == "" or frac.isdigit()) and s.isascii()
            and (exponent == "" or exponent.lstrip("+-").isdigit()))


def _unquote(s: str) -> str:
    if len(s) < 2 or s[0] not in ("'", '"') or s[-1] != s[0]:
        raise ValueError(f"{s!r} is not a quoted string")
    out, i, body = [], 0, s[1:-1]
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            i += 1
            c = body[i]
        elif c == s[0]:
            raise ValueError(f"{s!r}: an unescaped quote inside the string")
        out.append(c)
        i += 1
    return "".join(out)


def _split_list(inner: str) -> list[str]:
    """Split "'a', 'b, c'" at the commas outside quotes."""
    items, cur, quote, esc = [], [], None, False
    for c in inner:
        if esc:
            cur.append(c)
            esc = False
        elif c == "\\":
            cur.append(c)
            esc = True
        elif quote:
            cur.append(c)
            if c == quote:
                quote = None
        elif c in ("'", '"'):
            cur.append(c)
            quote = c
        elif c == ",":
            items.append("".join(cur))
            cur = []
        else:
            cur.append(c)
    items.append("".join(cur))
    return items
