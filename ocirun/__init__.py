"""ocirun: an OCI runtime-spec container runtime in Python, a drop-in for runc's CLI."""

__version__ = "0.1.0"
# The runtime-spec version we implement (reported in state JSON and `--version`).
SPEC_VERSION = "1.2.0"
