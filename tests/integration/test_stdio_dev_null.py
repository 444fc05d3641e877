"""Stdio that is the host's /dev/null reaches the container as the container's own /dev/null
(runc's reOpenDevNull): an fd on a host mount would pin that mount in the container, and CRIU
cannot checkpoint it (podman's `run -d` gives the runtime /dev/null as stdin).  Side by side
with runc."""
from __future__ import annotations

import pytest

import helpers

# The mount id of fd 0, and whether that mount is in the container's own mount table.
PROBE = ("id=$(sed -n 's/^mnt_id:[[:space:]]*//p' /proc/self/fdinfo/0); "
         "awk -v id=$id '$1 == id {found=1} END {print (found ? \"own\" : \"host\")}' /proc/self/mountinfo; "
         "stat -L -c %t:%T /proc/self/fd/0")


@pytest.mark.parametrize("runtime", ["ocirun", "runc"])
def test_stdin_on_the_host_dev_null_becomes_the_containers(runtime, ocirun_root, runc_root, tmp_path):
    """`run -d`: the runtime hands its own stdin (the host's /dev/null, from the test) to the
    container as it is (in the foreground runc would put pipes in between)."""
    run, root = (helpers.run_ocirun, ocirun_root) if runtime == "ocirun" else (helpers.run_runc, runc_root)
    out = tmp_path / "out"
    out.mkdir()
    bundle = helpers.make_bundle(tmp_path, ["sh", "-c", f"({PROBE}) > /tmp/result.tmp; mv /tmp/result.tmp /tmp/result"])
    config = helpers.read_config(bundle)
    config["mounts"].append({"destination": "/tmp", "type": "bind", "source": str(out), "options": ["rbind"]})
    helpers.write_config(bundle, config)
    helpers.ok("run", "-d", "-b", bundle, "null1", root=root, run=run)
    try:
        helpers.wait_until(lambda: (out / "result").exists(), what="the probe's result")
        assert (out / "result").read_text().split() == ["own", "1:3"], runtime
    finally:
        helpers.delete(root, "null1", run=run)


def test_dev_bind_mounted_from_the_host_is_left_alone(ocirun_root, tmp_path):
    """With the host's /dev bound in, the container's /dev/null *is* the host's: nothing to do."""
    bundle = helpers.make_bundle(tmp_path, ["sh", "-c", PROBE])
    config = helpers.read_config(bundle)
    config["mounts"] = [m for m in config["mounts"] if not m["destination"].startswith("/dev")]
    config["mounts"].append({"destination": "/dev", "type": "bind", "source": "/dev", "options": ["rbind"]})
    helpers.write_config(bundle, config)
    r = helpers.ok("run", "-b", bundle, "null2", root=ocirun_root)
    assert r.stdout.split()[1] == "1:3", r.stdout
