"""`ocirun pause` and `resume`: freeze and thaw the container's cgroup."""
from __future__ import annotations

from .errors import OCIError
from .state import Container


def pause(root: str, cid: str) -> None:
    _freeze(root, cid, True)


def resume(root: str, cid: str) -> None:
    _freeze(root, cid, False)


def _freeze(root: str, cid: str, frozen: bool) -> None:
    with Container.open(root, cid) as c:
        c.require("pause" if frozen else "resume")
        cg = c.cgroup()
        if cg is None:
            raise OCIError("the container has no cgroup: cannot pause or resume it")
        cg.freeze() if frozen else cg.thaw()
