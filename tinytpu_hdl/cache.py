"""Where cached artifacts live (Verilator libraries, sweep results) and the digest of the
package's source files that keys them: everything the package generates for a
configuration is a function of that configuration and these sources, so a key needs no
generated Verilog."""

import hashlib
import os
from pathlib import Path

__all__ = ["cache_root", "source_digest"]

_PACKAGE = Path(__file__).resolve().parent


def cache_root(kind):
    """``$TINYTPU_CACHE/kind``, else ``$XDG_CACHE_HOME/tinytpu_hdl/kind`` (default
    ``~/.cache/tinytpu_hdl/kind``)."""
    base = os.environ.get("TINYTPU_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tinytpu_hdl")
    return Path(base) / kind


def source_digest(*extra_files):
    """SHA-256 over the package's Python files (names and contents) and ``extra_files``."""
    h = hashlib.sha256()
    for path in sorted(_PACKAGE.rglob("*.py")) + [Path(f) for f in extra_files]:
        h.update(str(path.relative_to(_PACKAGE) if path.is_relative_to(_PACKAGE)
                     else path.name).encode())
        h.update(path.read_bytes())
    return h.hexdigest()
