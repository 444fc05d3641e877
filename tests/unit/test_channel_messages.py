"""The channel's message names are constants in process/channel.py (issue 14): a typo in one is
then a NameError at import, not a conversation that waits until the step deadline.  This scans
the runtime's source for a message name still written as a string literal, and checks that every
constant is one of the messages the protocol documents (channel.py, and joiner.py for exec)."""
from __future__ import annotations

import re
from pathlib import Path

import ocirun
from ocirun.process import channel, joiner

SOURCE = Path(ocirun.__file__).resolve().parent

# A message name as a literal: ch.send("go"), ch.expect("state"), msg["type"] == "error",
# msg.get("type") != "ready", and the same with single quotes.
LITERAL_USES = re.compile(r"""
      \.(?:send|send_fd|expect|expect_fd)\(\s*["']
    | \[\s*["']type["']\s*\]\s*[!=]=\s*["']
    | \.get\(\s*["']type["']\s*\)\s*[!=]=\s*["']
""", re.VERBOSE)


def _constants() -> dict[str, str]:
    return {name: value for name, value in vars(channel).items()
            if name.isupper() and isinstance(value, str) and re.fullmatch(r"[a-z_]+", value)}


def test_no_message_name_is_a_string_literal():
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if LITERAL_USES.search(line):
                found.append(f"{path.relative_to(SOURCE.parent)}:{lineno}: {line.strip()}")
    assert not found, "use the constants of ocirun/process/channel.py:\n" + "\n".join(found)


def test_the_scan_sees_a_literal():
    for line in ['ch.send("go")', "ours.expect('exec_pid')['pid']", 'if msg["type"] == "error":',
                 "msg.get('type') != 'ready'", 'ch.send_fd("mount_source", fd)']:
        assert LITERAL_USES.search(line), line
    for line in ["ch.send(GO)", 'if msg["type"] == ERROR:', "sender.send(fd)", 'd.get("type") or "a"']:
        assert not LITERAL_USES.search(line), line


def test_every_constant_is_a_documented_message():
    constants = _constants()
    assert {"go", "userns", "init_pid", "ready", "error", "exec_pid", "cgroup_done"} <= set(constants.values())
    assert len(set(constants.values())) == len(constants), "two constants for one message"
    documented = set(re.findall(r"^\s+\S+ → \S+\s+(\w+)", channel.__doc__ + joiner.__doc__, re.M))
    assert set(constants.values()) <= documented, sorted(set(constants.values()) - documented)
    # and the other way round: a message the docstrings describe has its constant
    assert documented <= set(constants.values()), sorted(documented - set(constants.values()))


def test_error_waiting_reads_an_error_already_sent_without_taking_it():
    ours, theirs = channel.Channel.pair()
    try:
        assert ours.error_waiting() is None  # nothing sent: no wait, no answer
        theirs.send(channel.ERROR, msg="bring up lo in the container's network namespace: EPERM")
        assert ours.error_waiting() == "bring up lo in the container's network namespace: EPERM"
        # A peek: the message is still there for the conversation's own recv.
        assert ours.recv()["type"] == channel.ERROR
    finally:
        ours.close()
        theirs.close()


def test_error_waiting_ignores_other_messages_and_a_dead_peer():
    ours, theirs = channel.Channel.pair()
    try:
        theirs.send(channel.READY)
        assert ours.error_waiting() is None
        assert ours.recv()["type"] == channel.READY
        theirs.close()
        assert ours.error_waiting() is None  # end-of-file: nothing said
    finally:
        ours.close()
