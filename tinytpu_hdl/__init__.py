"""tinytpu_hdl: a trainable TPU generator in Amaranth HDL.

    >>> from tinytpu_hdl import TPUConfig, Accelerator, MLP
    >>> acc = Accelerator(TPUConfig(n=2), backend="reference")
"""

from .config import TPUConfig
from .model import MLP
from .numeric import FixedFormat
from .runtime.accelerator import Accelerator, Stats
from .runtime.driver import TPUError

__all__ = ["TPUConfig", "FixedFormat", "Accelerator", "MLP", "Stats", "TPUError"]
