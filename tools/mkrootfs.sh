#!/bin/bash
# mkrootfs.sh DIR — build a minimal busybox root filesystem at DIR.
#
# DIR gets /bin/busybox (Debian's static build, package busybox-static) with one symlink per
# applet, the usual mount points, and an /etc/passwd and /etc/group with root (0), a user
# `test` (1000) and nobody (65534).  It is what the test-suite and tools/mkbundle.sh run in.
# Idempotent: an existing DIR is completed, not wiped.
set -euo pipefail

if [ $# -ne 1 ]; then
    echo "usage: $0 ROOTFS_DIR" >&2
    exit 2
fi
rootfs=$1
busybox=${BUSYBOX:-/bin/busybox}

# The static build matters: the rootfs has no libc of its own.
if ! "$busybox" true 2>/dev/null; then
    echo "$0: $busybox does not run (apt-get install busybox-static)" >&2
    exit 1
fi
if ldd "$busybox" >/dev/null 2>&1; then
    echo "$0: $busybox is dynamically linked; install busybox-static" >&2
    exit 1
fi

mkdir -p "$rootfs"
cd "$rootfs"
mkdir -p bin sbin usr/bin usr/sbin etc proc sys dev tmp run var/tmp root home/test
chmod 1777 tmp var/tmp
chmod 700 root

install -m 0755 "$busybox" bin/busybox
# `busybox --list` names busybox itself: linking that would replace the binary with a
# symlink to itself ("too many levels of symbolic links").
for applet in $(bin/busybox --list); do
    [ "$applet" = busybox ] && continue
    ln -sfn busybox "bin/$applet"
done

cat > etc/passwd <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
test:x:1000:1000:test user:/home/test:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > etc/group <<'GROUP'
root:x:0:
tty:x:5:
users:x:100:test
test:x:1000:
nogroup:x:65534:
GROUP
chown 1000:1000 home/test
: > etc/hosts
: > etc/resolv.conf
echo ocirun > etc/hostname
