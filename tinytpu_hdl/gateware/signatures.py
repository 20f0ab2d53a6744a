"""Interface signatures shared by the gateware blocks."""

from amaranth.lib import wiring
from amaranth.lib.wiring import Out

__all__ = ["valid_stream"]


def valid_stream(payload_shape):
    """A stream without back-pressure: ``payload`` is meaningful in every cycle
    in which ``valid`` is high, and the consumer must take it in that cycle.

    Members (from the producer's side): ``payload: Out(payload_shape)``, ``valid: Out(1)``.
    """
    return wiring.Signature({"payload": Out(payload_shape), "valid": Out(1)})
