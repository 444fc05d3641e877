#!/bin/bash
# systemdtests.sh [PYTEST ARGS...] — the systemd subset of the suite (`pytest -m systemd tests/systemd`):
# the systemd cgroup driver and the engines with their default (systemd) cgroup configuration,
# inside one throw-away qemu guest in which systemd is PID 1 on a pure cgroup v2 hierarchy
# (../shared/tools/v2run.sh -s: dbus, logind, user sessions).
#
# As tools/v2tests.sh: the repository is shared read-write at the same path, the guest uses this
# checkout's .venv interpreter, and the busybox rootfs and the engines' image archives are built
# here on the host first (tests/.cache).  Units, cgroups, state and engine storage live in the
# guest and vanish with it.  Never share /tmp with the guest (-w /tmp): its systemd cleans it.
# AppArmor is off in the guest (V2RUN_APPEND=apparmor=0): the host lacks apparmor_parser, and
# dockerd would otherwise ask for a profile it cannot load.  Exit status: pytest's; 124 = the VM
# timed out; 125 = the VM failed to start.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
v2run=${V2RUN:-$repo/../shared/tools/v2run.sh}
if [ ! -x "$v2run" ]; then
    echo "systemdtests.sh: $v2run not found (set V2RUN)" >&2
    exit 125
fi
python=$repo/.venv/bin/python
"$python" -c 'import sys; sys.path.insert(0, "tests"); import helpers; helpers.shared_rootfs()'
"$python" -c 'import sys; sys.path[:0] = ["tests", "tests/e2e"]; import engines
for image in (engines.IMAGE, engines.PAUSE_IMAGE): engines.image_archive(image)'

start=$(date +%s)
set +e
V2RUN_APPEND="${V2RUN_APPEND:-} apparmor=0" "$v2run" -s -w "$repo" -t "${SYSTEMDTESTS_TIMEOUT:-1800}" -- \
    "$python" -m pytest -p no:cacheprovider -m systemd -q -rs tests/systemd "$@"
rc=$?
set -e
echo "systemdtests.sh: guest run took $(( $(date +%s) - start )) s (exit $rc)" >&2
exit $rc
