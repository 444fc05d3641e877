#!/bin/bash
# v2tests.sh [PYTEST ARGS...] — run the pure cgroup v2 subset of the suite (`pytest -m v2 tests/v2`)
# inside one throw-away qemu guest whose only hierarchy is cgroup2 (../shared/tools/v2run.sh).
#
# The repository is shared read-write at the same path, so the guest uses this checkout's .venv
# interpreter (never the pyenv shim: ~15 s per start in the guest) and the busybox rootfs cached
# in tests/.cache, which is built here on the host first.  Bundles, state and cgroups live in
# the guest's /tmp, /run and cgroup tree and vanish with it.  Exit status: pytest's; 124 = the
# VM timed out; 125 = the VM failed to start.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
v2run=${V2RUN:-$repo/../shared/tools/v2run.sh}
if [ ! -x "$v2run" ]; then
    echo "v2tests.sh: $v2run not found (set V2RUN)" >&2
    exit 125
fi
python=$repo/.venv/bin/python
"$python" -c 'import sys; sys.path.insert(0, "tests"); import helpers; helpers.shared_rootfs()'

start=$(date +%s)
set +e
"$v2run" -w "$repo" -t "${V2TESTS_TIMEOUT:-900}" -- \
    "$python" -m pytest -p no:cacheprovider -m v2 -q -rs tests/v2 "$@"
rc=$?
set -e
echo "v2tests.sh: guest run took $(( $(date +%s) - start )) s (exit $rc)" >&2
exit $rc
