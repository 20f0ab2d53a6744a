"""tinytpu_hdl: a trainable TPU generator in Amaranth HDL.

    >>> from tinytpu_hdl import TPUConfig, Accelerator, MLP
    >>> acc = Accelerator(TPUConfig(n=2), backend="reference")
"""

from importlib.metadata import PackageNotFoundError, version as _version

from .config import TPUConfig
from .model import MLP
from .numeric import FixedFormat
from .runtime.accelerator import Accelerator, Stats
from .runtime.driver import ConfigMismatch, TPUError

__all__ = ["TPUConfig", "FixedFormat", "Accelerator", "MLP", "Stats", "TPUError", "ConfigMismatch",
           "__version__"]

try:
    __version__ = _version("tinytpu_hdl")
except PackageNotFoundError:          # run from a source tree that is not installed
    __version__ = "0.0.0+unknown"
