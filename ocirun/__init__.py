"""ocirun: an OCI runtime-spec container runtime in Python, a drop-in for runc's CLI."""

__version__ = "0.1.0"
# The runtime-spec version we implement (reported in state JSON and `--version`).
SPEC_VERSION = "1.2.0"

# `from ocirun import Container, OCIError`: the Python API (api.py), loaded on first use only:
# every engine command imports this package, and must not pay for what it does not use.
_API_NAMES = ("Container", "OCIError", "ConfigError")


def __getattr__(name: str):
    if name in _API_NAMES:
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
