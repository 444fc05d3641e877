"""What pyproject.toml cannot say: which folders become which packages, and the build-time commit.

The repository keeps three top-level folders that an installed ocirun needs:

- `ocirun/`: the runtime;
- `spec/`: the runtime-spec JSON Schemas that `ocirun.schema` reads on every `create`.  Installed
  as `ocirun/spec/` (package data of a package mapped onto the folder, `ocirun.spec`), so the
  files in the repository are the only copy: no build step copies them and no symlink stands in
  for them (a symlink does not survive every sdist and wheel tool, and a copy would be a second
  source of truth to keep in step).  The sdist keeps `spec/` where it is, and a wheel built from
  that sdist maps it again;
- `conformance/`: the conformance suite, installed as `ocirun.conformance` (a top-level
  `conformance` package in site-packages could collide with any other of that name), with the
  `ocirun-conformance` command.  In a checkout `python -m conformance` still runs it in place.

The mapping is explicit here rather than in pyproject.toml because pyproject's `packages.find`
cannot combine found packages with mapped ones; listing every package there by hand would miss
the next subpackage someone adds to ocirun/.

The C module `ocirun._syscalls` (ocirun/_syscalls.c): the raw syscall entry of ocirun/linux.py,
which saves create, run and exec the ~2.5 ms of importing ctypes.  It is optional: without a
compiler or Python's headers the build goes on without it, and ocirun.linux falls back to the
same functions over ctypes (ocirun/_syscalls_ctypes.py).  It makes the wheel a platform wheel
(cp311-...-linux_x86_64); an editable install builds it in place, beside the sources.

The commit: a wheel or sdist carries `ocirun/_build_info.py` with the `git describe` of the
checkout it was built from (ocirun/buildinfo.py); a wheel built from an sdist keeps the sdist's.
"""
import importlib.util
import os
import shutil

from setuptools import Extension, find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = os.path.dirname(os.path.abspath(__file__))


def _buildinfo():
    """ocirun/buildinfo.py, loaded by path: the package is not importable while it is built."""
    spec = importlib.util.spec_from_file_location("_ocirun_buildinfo", os.path.join(HERE, "ocirun", "buildinfo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_build_info(package_dir: str) -> None:
    """Record the checkout's commit in package_dir/_build_info.py.  Outside a git checkout (an
    unpacked sdist) leave alone the file the sdist brought."""
    info = _buildinfo()
    commit = info.git_commit(HERE)
    if commit is None:
        return
    path = os.path.join(package_dir, "_build_info.py")
    if os.path.lexists(path):
        os.unlink(path)  # the sdist's release tree holds hard links to the sources: never write through one
    with open(path, "w") as f:
        f.write(info.build_info_source(commit))


class BuildPyWithCommit(build_py):
    def run(self):
        editable = getattr(self, "editable_mode", False)
        if not editable:
            # setuptools never empties build/lib, and a wheel takes all of it: an in-tree build
            # (pip install .) after an older layout would ship its stale top-level conformance/.
            # A pure-Python package loses nothing by rebuilding it whole.
            shutil.rmtree(self.build_lib, ignore_errors=True)
        super().run()
        if not editable:  # a checkout asks git itself
            _write_build_info(os.path.join(self.build_lib, "ocirun"))


class SdistWithCommit(sdist):
    def make_release_tree(self, base_dir, files):
        super().make_release_tree(base_dir, files)
        _write_build_info(os.path.join(base_dir, "ocirun"))


setup(
    # Folders of data are packages too to setuptools (any folder is importable), so spec/schema
    # is named as one: otherwise it warns that "installing it as data is deprecated".
    packages=find_packages(include=["ocirun", "ocirun.*"]) + ["ocirun.spec", "ocirun.spec.schema",
                                                              "ocirun.conformance"],
    package_dir={"ocirun.spec": "spec", "ocirun.conformance": "conformance"},
    package_data={"ocirun.spec": ["README.md"], "ocirun.spec.schema": ["*.json"]},
    ext_modules=[Extension("ocirun._syscalls", ["ocirun/_syscalls.c"], optional=True)],
    cmdclass={"build_py": BuildPyWithCommit, "sdist": SdistWithCommit},
)
