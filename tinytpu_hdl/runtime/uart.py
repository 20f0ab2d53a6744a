"""Backend: a TPU on an FPGA board over a UART (pyserial), speaking framed host packets."""

import time

from ..host_protocol import (
    BRIDGE_ERROR, FRAME_TO_HOST, BridgeError, ProtocolError, crc16, frame,
)

#: Line bits per byte of 8N1 serial: start, eight data bits, stop.
BITS_PER_BYTE = 10

__all__ = ["FramedLink", "UARTTransport", "BridgeFault", "LinkMeter"]


class BridgeFault(RuntimeError):
    """The bridge rejected a frame (CRC, length, timeout, framing); nothing was executed."""

    def __init__(self, code):
        self.code = BridgeError(code)
        super().__init__(f"the UART bridge rejected the frame: {self.code.name}")


class FramedLink:
    """A transport (see :mod:`.driver`) over a byte link: frames each command, checks each
    response frame's CRC. Subclasses provide ``write_bytes``, ``read_bytes`` and ``idle``."""

    def __init__(self, cfg, *, max_words=256):
        self.cfg = cfg
        self.max_packet_words = max_words

    def exchange(self, words):
        if len(words) > self.max_packet_words:
            raise ProtocolError(f"a packet of {len(words)} words exceeds the bridge's "
                                f"{self.max_packet_words}")
        self.write_bytes(frame(words))
        try:
            return self.exchange_reply()
        except KeyboardInterrupt:
            self.exchange_reply()            # the answer under way: stay in step
            raise

    def exchange_reply(self):
        """Read one response frame; raise :class:`BridgeFault` for a bridge error frame."""
        sync = self.read_bytes(1)[0]
        if sync != FRAME_TO_HOST:
            raise ProtocolError(f"expected a response frame, got byte {sync:#04x}")
        head = self.read_bytes(2)
        n = head[0] | head[1] << 8
        body = self.read_bytes(4 * n)
        crc = self.read_bytes(2)
        if crc16(head + body) != (crc[0] | crc[1] << 8):
            raise ProtocolError("response frame with a bad CRC")
        out = [int.from_bytes(body[4 * i:4 * i + 4], "little") for i in range(n)]
        if n == 1 and out[0] & 0xFF == BRIDGE_ERROR:
            raise BridgeFault(out[0] >> 8 & 0xFF)
        return out


class UARTTransport(FramedLink):
    """The board's USB UART (``pip install pyserial``)."""

    def __init__(self, cfg, port, *, baudrate=115200, max_words=256, timeout=5.0):
        try:
            import serial
        except ImportError:
            raise RuntimeError("the uart backend needs pyserial: pip install 'tinytpu_hdl[board]' "
                               "(or pip install pyserial)") from None
        self._serial = serial.Serial(port, baudrate=baudrate, timeout=timeout)
        self._timeout = timeout
        super().__init__(cfg, max_words=max_words)

    def write_bytes(self, data):
        self._serial.write(data)

    def read_bytes(self, n):
        data = self._serial.read(n)
        if len(data) != n:
            raise TimeoutError(f"the board sent {len(data)} of {n} bytes within "
                               f"{self._timeout} s")
        return data

    def idle(self, cycles):
        time.sleep(min(0.05, cycles * 1e-8))


class LinkMeter:
    """A transport that passes every command to another transport (e.g. the reference
    model's) and counts what the board's serial link would carry for it: each command and
    its response framed as the UART bridge frames them, writes split into packets of at
    most ``max_words`` words as over a real link. ``seconds(baud)`` is the line time."""

    def __init__(self, inner, *, max_words=256):
        self.inner = inner
        self.cfg = inner.cfg
        self.max_packet_words = max_words
        self.bytes_to_device = 0
        self.bytes_to_host = 0
        self.exchanges = 0

    def exchange(self, words):
        reply = self.inner.exchange(words)
        self.bytes_to_device += len(frame(words))
        self.bytes_to_host += len(frame(reply, FRAME_TO_HOST))
        self.exchanges += 1
        return reply

    def idle(self, cycles):
        self.inner.idle(cycles)

    def seconds(self, baud):
        """Line time of everything counted so far at ``baud`` (8N1), both directions one
        after the other (the protocol waits for each response)."""
        return (self.bytes_to_device + self.bytes_to_host) * BITS_PER_BYTE / baud
