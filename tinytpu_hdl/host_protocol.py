"""The host command/response protocol, defined once for the gateware and every backend.

The host talks to the TPU through one stream of 32-bit command words and one
stream of 32-bit response words (``docs/host-protocol.md``). A command is::

    word 0   [7:0] command   [15:8] space   [31:16] count
    word 1   address
    ...      for WRITE: count items, each item_words(space) words

and every command is answered by one response::

    word 0   [7:0] command (echo)   [15:8] status   [31:16] count
    ...      for a successful READ: count items

Items are memory rows (or CSRs) split into 32-bit words, least significant
word first; a unified-buffer row holds lane 0 in its lowest bits.
"""

from enum import IntEnum
from functools import lru_cache

import numpy as np

from .isa import INSTRUCTION_BITS

__all__ = ["Command", "Space", "Status", "item_bits", "item_words", "pack_items",
           "unpack_items", "unpack_rows", "header", "parse_header", "ProtocolError", "crc16", "frame",
           "FRAME_TO_DEVICE", "FRAME_TO_HOST", "BRIDGE_ERROR", "BridgeError", "response_length",
           "packet_words"]

#: Serial framing (the UART bridge): sync byte, 16-bit word count, words (little endian),
#: CRC-16/CCITT-FALSE of the count and word bytes.
FRAME_TO_DEVICE = 0xA5
FRAME_TO_HOST = 0x5A
#: Low byte of the single word of a bridge error frame; the error is in bits [15:8].
BRIDGE_ERROR = 0xEE


class BridgeError(IntEnum):
    CRC = 1          # the frame's CRC did not match: nothing was executed
    LENGTH = 2       # zero words, or more than the bridge buffers
    TIMEOUT = 3      # the frame stopped arriving
    FRAMING = 4      # a byte without its stop bit
    PACKET = 5       # the frame's words are not one whole command (see packet_words)


def packet_words(cfg, header_word):
    """The words of the command packet that begins with ``header_word``: header and
    address, and for a WRITE to a known space its items; every other command (unknown
    ones included) is two words."""
    command, space, count = parse_header(header_word)
    if command == Command.WRITE and space < len(Space):
        return 2 + count * item_words(cfg, Space(space))
    return 2


def crc16(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE (polynomial 0x1021, initial 0xFFFF)."""
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def frame(words, sync=FRAME_TO_DEVICE):
    """Bytes of a serial frame carrying ``words``."""
    body = bytes([len(words) & 0xFF, len(words) >> 8]) + b"".join(
        int(w).to_bytes(4, "little") for w in words)
    crc = crc16(body)
    return bytes([sync]) + body + bytes([crc & 0xFF, crc >> 8])


def response_length(cfg, command_word, header_word):
    """Words in the response whose first word is ``header_word`` to ``command_word``."""
    command, space, _ = parse_header(command_word)
    echo, status, count = parse_header(header_word)
    if echo == Command.READ and status == Status.OK and space < len(Space):
        return 1 + count * item_words(cfg, Space(space))
    return 1


class Command(IntEnum):
    WRITE = 0x01    # write count items from address on
    READ = 0x02     # read count items from address on
    START = 0x03    # set START_PC to address and start the program
    STOP = 0x04     # stop a running program (error STOPPED)
    CLEAR = 0x05    # clear an error or done state back to idle


class Space(IntEnum):
    UB = 0          # unified buffer, one item = one row of n data words
    ACC = 1         # accumulators, one item = one row of n accumulator words
    IMEM = 2        # instruction memory, one item = one 128-bit instruction
    CSR = 3         # control and status registers, one item = 32 bits


class Status(IntEnum):
    OK = 0
    BUSY = 1        # the program is running: memory access refused (a write also stops it)
    RANGE = 2       # address + count beyond the end of the space
    BAD_COMMAND = 3 # unknown command or space
    REFUSED = 4     # START while in the error state (CLEAR first)


class ProtocolError(RuntimeError):
    """A response that does not follow the protocol."""


@lru_cache(maxsize=None)
def item_bits(cfg, space):
    space = Space(space)
    if space == Space.UB:
        return cfg.n * cfg.data.width
    if space == Space.ACC:
        return cfg.n * cfg.acc.width
    if space == Space.IMEM:
        return INSTRUCTION_BITS
    return 32


@lru_cache(maxsize=None)
def item_words(cfg, space):
    return (item_bits(cfg, space) + 31) // 32


def space_depth(cfg, space):
    space = Space(space)
    return {Space.UB: cfg.ub_depth, Space.ACC: cfg.acc_depth, Space.IMEM: cfg.imem_depth,
            Space.CSR: 64}[space]


def header(command, space=0, count=0):
    if not 0 <= count < 1 << 16:
        raise ValueError(f"count {count} does not fit in 16 bits")
    return int(command) | (int(space) << 8) | (count << 16)


def parse_header(word):
    return word & 0xFF, (word >> 8) & 0xFF, (word >> 16) & 0xFFFF


def _lanes(cfg, space):
    if Space(space) == Space.UB:
        return cfg.n, cfg.data
    return cfg.n, cfg.acc


def _rows_to_words(bits, width, words_per):
    """``(R, lanes)`` unsigned lane patterns of ``width`` bits -> ``(R, words_per)`` 32-bit
    words, lane 0 in the lowest bits."""
    rows, lanes = bits.shape
    if 32 % width == 0:
        per = 32 // width
        padded = np.zeros((rows, words_per * per), dtype=np.uint64)
        padded[:, :lanes] = bits
        shifts = (np.arange(per, dtype=np.uint64) * np.uint64(width))
        return (padded.reshape(rows, words_per, per) << shifts).sum(axis=2, dtype=np.uint64)
    out = np.zeros((rows, words_per), dtype=np.uint64)
    for start in range(0, rows, 1 << 14):
        chunk = bits[start:start + (1 << 14)]
        flat = ((chunk[:, :, None] >> np.arange(width, dtype=np.uint64)) & np.uint64(1))
        flat = flat.reshape(len(chunk), lanes * width)
        padded = np.zeros((len(chunk), words_per * 32), dtype=np.uint64)
        padded[:, :lanes * width] = flat
        out[start:start + len(chunk)] = (padded.reshape(len(chunk), words_per, 32)
                                         << np.arange(32, dtype=np.uint64)).sum(axis=2)
    return out


def _words_to_rows(words, width, lanes):
    """Inverse of :func:`_rows_to_words`: ``(R, words_per)`` words -> ``(R, lanes)``."""
    words = np.asarray(words, dtype=np.uint64)
    rows, words_per = words.shape
    mask = np.uint64((1 << width) - 1)
    if 32 % width == 0:
        per = 32 // width
        shifts = (np.arange(per, dtype=np.uint64) * np.uint64(width))
        return ((words[:, :, None] >> shifts) & mask).reshape(rows, words_per * per)[:, :lanes]
    out = np.zeros((rows, lanes), dtype=np.uint64)
    for start in range(0, rows, 1 << 14):
        chunk = words[start:start + (1 << 14)]
        flat = ((chunk[:, :, None] >> np.arange(32, dtype=np.uint64)) & np.uint64(1))
        flat = flat.reshape(len(chunk), words_per * 32)[:, :lanes * width]
        out[start:start + len(chunk)] = (flat.reshape(len(chunk), lanes, width)
                                         << np.arange(width, dtype=np.uint64)).sum(axis=2)
    return out


def pack_items(cfg, space, items):
    """Words of a sequence of items. UB/ACC items are rows of raw signed integers (a list
    of rows or an ``(R, n)`` array); IMEM items are 128-bit integers; CSR items are 32-bit
    integers."""
    space = Space(space)
    words_per = item_words(cfg, space)
    if space in (Space.UB, Space.ACC):
        lanes, fmt = _lanes(cfg, space)
        rows = np.asarray(items, dtype=np.int64)
        if rows.size == 0:
            return []
        if rows.ndim != 2 or rows.shape[1] != lanes:
            raise ValueError(f"a {space.name} row has {lanes} lanes, not shape "
                             f"{rows.shape[1:]}")
        if rows.min() < fmt.min_int or rows.max() > fmt.max_int:
            bad = rows[(rows < fmt.min_int) | (rows > fmt.max_int)]
            raise ValueError(f"{space.name} rows hold raw {fmt} values in [{fmt.min_int}, "
                             f"{fmt.max_int}]; {len(bad)} value(s) outside it (e.g. "
                             f"{int(bad[0])}) would wrap")
        words = _rows_to_words(fmt.to_unsigned(rows).astype(np.uint64), fmt.width, words_per)
        return words.reshape(-1).astype(np.int64).tolist()
    out = []
    for item in items:
        value = int(item)
        if not 0 <= value < 1 << item_bits(cfg, space):
            raise ValueError(f"{space.name} item {value:#x} does not fit in "
                             f"{item_bits(cfg, space)} bits")
        out.extend((value >> (32 * i)) & 0xFFFFFFFF for i in range(words_per))
    return out


def unpack_rows(cfg, space, words):
    """UB/ACC rows from their words, as one ``(R, n)`` int64 array."""
    space = Space(space)
    words_per = item_words(cfg, space)
    if len(words) % words_per:
        raise ProtocolError(f"{len(words)} words do not make whole {space.name} items")
    lanes, fmt = _lanes(cfg, space)
    grid = np.asarray(words, dtype=np.uint64).reshape(-1, words_per)
    return fmt.from_unsigned(_words_to_rows(grid, fmt.width, lanes).astype(np.int64))


def unpack_items(cfg, space, words):
    """Inverse of :func:`pack_items`: a list of items (UB/ACC rows as int64 arrays)."""
    space = Space(space)
    if space in (Space.UB, Space.ACC):
        return list(unpack_rows(cfg, space, words))
    words_per = item_words(cfg, space)
    if len(words) % words_per:
        raise ProtocolError(f"{len(words)} words do not make whole {space.name} items")
    items = []
    for start in range(0, len(words), words_per):
        value = 0
        for i, w in enumerate(words[start:start + words_per]):
            value |= int(w) << (32 * i)
        items.append(value)
    return items
