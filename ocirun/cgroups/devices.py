"""linux.resources.devices -> one normalised device policy, shared by v1 files and the v2 eBPF filter.

The spec's rules are a list applied in order ("last match wins"), with the semantics of the v1
devices controller.  Like runc we first run them through an *emulator* of that controller
(`Policy`): the result is a default (allow or deny everything) plus a set of exceptions that
all have the opposite effect.  From that one shape we can write

* v1: the fewest devices.allow / devices.deny writes from what devices.list shows now
  (`transition`), so an `update` never passes through a moment where /dev/null is denied;
* v2: a BPF_PROG_TYPE_CGROUP_DEVICE program (ebpf.py) whose exceptions never overlap in
  effect, so their order in the program does not matter.

runc (and so every engine) appends `DEFAULT_ALLOWED` to the user's rules: mknod of anything,
and rwm on the devices a container always needs (/dev/null, zero, full, random, urandom, tty,
ptmx, /dev/pts/*, tun).  A config that denies everything still gets them; we do the same.
Without any rule the policy starts as "deny all", as runc's emulator does.
"""
from __future__ import annotations

from ..errors import ConfigError

WILDCARD = -1
FIELD = "linux.resources.devices"

# (type, major, minor, access) that runc's specconv.AllowedDevices allows in every container.
DEFAULT_ALLOWED: tuple[tuple[str, int, int, str], ...] = (
    ("c", WILDCARD, WILDCARD, "m"),
    ("b", WILDCARD, WILDCARD, "m"),
    ("c", 1, 3, "rwm"),       # /dev/null
    ("c", 1, 8, "rwm"),       # /dev/random
    ("c", 1, 7, "rwm"),       # /dev/full
    ("c", 5, 0, "rwm"),       # /dev/tty
    ("c", 1, 5, "rwm"),       # /dev/zero
    ("c", 1, 9, "rwm"),       # /dev/urandom
    ("c", 136, WILDCARD, "rwm"),  # /dev/pts/*
    ("c", 5, 2, "rwm"),       # /dev/ptmx
    ("c", 10, 200, "rwm"),    # /dev/net/tun
)


class Rule:
    """One rule: type 'a' | 'b' | 'c', major/minor (-1 = any), access ⊆ "rwm", allow."""

    __slots__ = ("type", "major", "minor", "access", "allow")

    def __init__(self, type_: str, major: int, minor: int, access: str, allow: bool):
        self.type, self.major, self.minor, self.access, self.allow = type_, major, minor, access, allow

    def key(self) -> tuple[str, int, int]:
        return self.type, self.major, self.minor

    def v1_text(self) -> str:
        """The line devices.allow / devices.deny take: "c 1:3 rwm", "a *:* rwm"."""
        if self.type == "a":
            return "a *:* rwm"
        num = lambda n: "*" if n == WILDCARD else str(n)  # noqa: E731
        return f"{self.type} {num(self.major)}:{num(self.minor)} {self.access}"

    def __eq__(self, other) -> bool:
        return isinstance(other, Rule) and (self.key(), self.access, self.allow) == (
            other.key(), other.access, other.allow)

    def __repr__(self) -> str:
        return f"Rule({self.v1_text()!r}, allow={self.allow})"


def _access(s: str) -> str:
    """Canonical order "rwm" of a set of access letters."""
    return "".join(c for c in "rwm" if c in s)


def parse_rules(devices, field: str = FIELD) -> list[Rule]:
    """The spec's device rules (without the defaults); errors name the JSON field."""
    if devices is None:
        return []
    if not isinstance(devices, list):
        raise ConfigError(field, "must be an array")
    out = []
    for i, d in enumerate(devices):
        p = f"{field}[{i}]"
        if not isinstance(d, dict):
            raise ConfigError(p, "must be an object")
        allow = d.get("allow")
        if not isinstance(allow, bool):
            raise ConfigError(f"{p}.allow", "is required and must be a boolean")
        t = d.get("type") or "a"
        if t not in ("a", "b", "c"):
            raise ConfigError(f"{p}.type", f"invalid cgroup device type {t!r} (want a, b or c)")
        nums = []
        for k in ("major", "minor"):
            v = d.get(k)
            if v is None:
                v = WILDCARD
            if isinstance(v, bool) or not isinstance(v, int) or v < WILDCARD or v > 0xFFFFFFFF:
                raise ConfigError(f"{p}.{k}", "must be a device number (or absent / -1 for any)")
            nums.append(v)
        access = d.get("access")
        if access is None or access == "":
            access = "rwm"  # the spec: absent access means rwm (runc refuses "", docker always sends it)
        if not isinstance(access, str) or not access or set(access) - set("rwm"):
            raise ConfigError(f"{p}.access", f"invalid access {access!r} (want a combination of r, w, m)")
        out.append(Rule(t, nums[0], nums[1], _access(access), allow))
    return out


def with_defaults(rules: list[Rule]) -> list[Rule]:
    return rules + [Rule(t, ma, mi, acc, True) for t, ma, mi, acc in DEFAULT_ALLOWED]


class Policy:
    """What the v1 devices controller would hold after a list of rules (runc's emulator).

    `default_allow` is the behaviour for devices no exception names; `exceptions` maps
    (type, major, minor) to the access letters that behave the *other* way.
    """

    def __init__(self, default_allow: bool = False, exceptions: dict | None = None):
        self.default_allow = default_allow
        self.exceptions: dict[tuple[str, int, int], str] = dict(exceptions or {})

    def apply(self, rule: Rule, field: str = FIELD) -> None:
        if rule.type == "a":
            # Like the kernel: any "a" rule resets the whole list, whatever numbers it carries.
            self.default_allow = rule.allow
            self.exceptions.clear()
        elif rule.allow == self.default_allow:
            self._remove(rule, field)
        else:
            have = self.exceptions.get(rule.key(), "")
            self.exceptions[rule.key()] = _access(have + rule.access)

    def _remove(self, rule: Rule, field: str) -> None:
        """Take `rule.access` out of the exception with the same key.

        The v1 kernel silently ignores a removal that only a wildcard exception covers (it
        cannot split c *:* into all-but-one); a rule asking for that would look effective and
        not be, so, like runc, it is refused.
        """
        t, ma, mi = rule.key()
        for wild in ((t, WILDCARD, mi), (t, ma, WILDCARD), (t, WILDCARD, WILDCARD)):
            if wild != rule.key() and set(self.exceptions.get(wild, "")) & set(rule.access):
                raise ConfigError(field, f"rule {rule.v1_text()!r} would punch a hole in the wildcard rule "
                                  f"{Rule(*wild, self.exceptions[wild], not rule.allow).v1_text()!r}, "
                                  "which the devices cgroup cannot do")
        left = _access("".join(c for c in self.exceptions.get(rule.key(), "") if c not in rule.access))
        if left:
            self.exceptions[rule.key()] = left
        else:
            self.exceptions.pop(rule.key(), None)

    def rules(self) -> list[Rule]:
        """The policy as rules: the default ("a") first, then the exceptions in a stable order."""
        out = [Rule("a", WILDCARD, WILDCARD, "rwm", self.default_allow)]
        for key in sorted(self.exceptions):
            out.append(Rule(*key, self.exceptions[key], not self.default_allow))
        return out

    def allows(self, type_: str, major: int, minor: int, access: str) -> bool:
        """Would an access be allowed (the reference the eBPF program is checked against)."""
        for (t, ma, mi), acc in self.exceptions.items():
            if ((t == type_) and ma in (WILDCARD, major) and mi in (WILDCARD, minor)
                    and set(access) <= set(acc)):
                return not self.default_allow
        return self.default_allow


def policy_for(devices, field: str = FIELD) -> Policy:
    """The container's policy: the spec's rules, then runc's default allowed devices."""
    p = Policy()
    for r in with_defaults(parse_rules(devices, field)):
        p.apply(r, field)
    return p


# --------------------------------------------------------------------------- v1

def policy_from_list(text: str) -> Policy:
    """What a v1 cgroup's devices.list shows.  "a *:* rwm" means default-allow; the kernel
    shows no deny exceptions then, so such a list is treated as "unknown, reset it"."""
    p = Policy(default_allow=False)
    for line in text.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        t, nums, acc = parts
        if t == "a":
            return Policy(default_allow=True)
        ma, _, mi = nums.partition(":")
        key = (t, WILDCARD if ma == "*" else int(ma), WILDCARD if mi == "*" else int(mi))
        p.exceptions[key] = _access(p.exceptions.get(key, "") + acc)
    return p


def transition(current: Policy, target: Policy) -> list[Rule]:
    """The v1 writes that take a cgroup from `current` to `target`.

    A reset ("a") is written only when the default must change or the current state is a
    default-allow one (whose deny exceptions devices.list does not show); otherwise only the
    exceptions that differ are revoked or added, so running processes never lose access to
    a device both policies allow.
    """
    out: list[Rule] = []
    old = current.exceptions
    if current.default_allow or current.default_allow != target.default_allow:
        out.append(Rule("a", WILDCARD, WILDCARD, "rwm", target.default_allow))
        old = {}
    for key in sorted(old):
        dropped = _access("".join(c for c in old[key] if c not in target.exceptions.get(key, "")))
        if dropped:
            out.append(Rule(*key, dropped, target.default_allow))
    for key in sorted(target.exceptions):
        gained = _access("".join(c for c in target.exceptions[key] if c not in old.get(key, "")))
        if gained:
            out.append(Rule(*key, gained, not target.default_allow))
    return out
