#!/bin/bash
# mkbundle.sh DIR [ARG...] — make an OCI bundle at DIR that runs busybox.
#
# DIR/rootfs is built by tools/mkrootfs.sh, DIR/config.json is written by `ocirun spec`
# (set OCIRUN=runc to compare with runc).  With ARGs, process.args becomes them and
# process.terminal false, so the container runs without a tty: `mkbundle.sh /tmp/hello echo hi`.
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: $0 BUNDLE_DIR [ARG...]" >&2
    exit 2
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
bundle=$1
shift
ocirun=${OCIRUN:-$repo/.venv/bin/ocirun}
python=${PYTHON:-$repo/.venv/bin/python}

mkdir -p "$bundle"
"$here/mkrootfs.sh" "$bundle/rootfs"
rm -f "$bundle/config.json"
"$ocirun" spec --bundle "$bundle"

if [ $# -gt 0 ]; then
    "$python" - "$bundle/config.json" "$@" <<'PY'
import json
import sys

path, args = sys.argv[1], sys.argv[2:]
with open(path) as f:
    config = json.load(f)
config["process"]["args"] = args
config["process"]["terminal"] = False
with open(path, "w") as f:
    json.dump(config, f, indent=2)
    f.write("\n")
PY
fi
echo "$bundle"
