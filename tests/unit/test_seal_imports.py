"""become.seal_imports(): once the container's init has pivoted (or the exec'd process has
joined the container's mount namespace), every path names the container's files, so an
import of a module not yet loaded must fail instead of running the image's Python as us."""
from __future__ import annotations

import subprocess
import sys
import textwrap


def test_sealed_process_loads_nothing_new_but_keeps_what_it_has(tmp_path):
    # Modules the sealed process would find, as a container image could plant them: one on
    # sys.path, one inside a package already loaded (found through the package's __path__, the
    # way `from .. import hooks` would find ocirun/hooks.py inside the container's root).
    (tmp_path / "planted.py").write_text("print('PLANTED CODE RAN')\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "inner.py").write_text("print('PLANTED CODE RAN')\n")
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import json                       # loaded before sealing: stays usable
        import pkg
        from ocirun.process import become
        become.seal_imports()
        for name in ("planted", "fractions", "pkg.inner"):
            try:
                __import__(name)
                print("imported", name)
            except ImportError:
                print("refused", name)
        import json as again              # already in sys.modules
        print("json ok", again.dumps([1]))
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "PLANTED CODE RAN" not in r.stdout
    assert r.stdout.split("\n")[:4] == ["refused planted", "refused fractions", "refused pkg.inner", "json ok [1]"]
