"""Host driver: the host side of :mod:`tinytpu_hdl.host_protocol`, over any transport.

A *transport* is an object with ``cfg`` and two methods:

* ``exchange(words) -> list[int]``: send one command (its words) and return the words of
  its response (header and, for a successful read, the data);
* ``idle(cycles)``: let the device run for about ``cycles`` clock cycles.

A simulation may also offer a *backdoor* (``transport.backdoor`` true, with
``write_rows(space, address, words)`` and ``read_rows(space, address, count)``): rows of
the unified buffer and the accumulators copied straight into and out of the simulated
memories, in no clock cycle. The driver moves UB and ACC rows through it wherever the
host interface would take them (in range; values that fit the format; a buffer write, or
no program running) and sends every other command through the protocol, so the device
answers (and faults) as it would: everything but the simulated time the transfers take is
as through the protocol.

Every backend (reference model, Amaranth simulation, compiled simulation, a board over
UART) provides one; everything above the transport is shared.
"""

from dataclasses import dataclass

import numpy as np

from ..asm import Program, format_instruction
from ..gateware.control import CSR, INFO_FIELDS, State, identity_registers
from ..host_protocol import (
    Command, ProtocolError, Space, Status, header, item_words, pack_items, parse_header,
    space_depth, unpack_items,
)
from ..isa import ErrorCode, decode, encode

__all__ = ["HostDriver", "TPUError", "HostError", "RunStats", "ConfigMismatch"]


class HostError(RuntimeError):
    """The device refused a host command (busy, out of range, ...)."""

    def __init__(self, command, status, detail=""):
        self.command = Command(command)
        self.status = Status(status)
        super().__init__(f"{self.command.name} refused: {self.status.name}{detail}")


class ConfigMismatch(RuntimeError):
    """The device behind a transport was built from another :class:`TPUConfig` than the
    host's (its ``INFO``, depth and ``CONFIG`` registers say so)."""


class TPUError(RuntimeError):
    """A program stopped with an error. Carries the error code, the failing instruction's
    address, when known its disassembly, and the run's counters (``stats``). The device is
    idle again when it is raised (see :meth:`HostDriver.recover`)."""

    def __init__(self, code, pc, instruction=None, stats=None):
        self.code = ErrorCode(code)
        self.pc = pc
        self.instruction = instruction
        self.stats = stats
        where = f" at pc {pc}"
        if instruction is not None:
            where += f" ({instruction})"
        super().__init__(f"TPU error {self.code.name}{where}")


@dataclass(frozen=True)
class RunStats:
    """Counters of the last run, read from the device."""

    cycles: int
    array_busy_cycles: int
    macs: int
    instructions: int
    n: int
    overflow_array: bool
    overflow_vector: bool
    overflow_gd: bool

    @property
    def utilization(self):
        """MACs performed over the array's peak (``cycles * n * n``)."""
        return self.macs / (self.cycles * self.n * self.n) if self.cycles else 0.0


class HostDriver:
    """Reads and writes device memories, loads and runs programs."""

    def __init__(self, transport):
        self.transport = transport
        self.cfg = transport.cfg

    def _command(self, command, space=0, address=0, count=0, data=()):
        words = [header(command, space, count), address & 0xFFFFFFFF, *data]
        resp = self.transport.exchange(words)
        if not resp:
            raise ProtocolError(f"no response to {Command(command).name}")
        echo, status, rcount = parse_header(resp[0])
        if echo != int(command):
            raise ProtocolError(f"response to {Command(command).name} echoes command {echo}")
        if status != Status.OK:
            raise HostError(command, status, f" ({Space(space).name} address {address}, "
                                             f"count {count})" if command in
                            (Command.READ, Command.WRITE) else "")
        return resp[1:], rcount

    def _backdoor(self, command, space, address, count):
        """Whether UB/ACC rows go through the transport's backdoor: only where the host
        interface would take them (in range; a buffer write, or the device not running).
        Everything else goes through the protocol, which answers as the hardware does."""
        if not getattr(self.transport, "backdoor", False) or space not in (Space.UB, Space.ACC):
            return False
        if not 0 <= address or address + count > space_depth(self.cfg, space):
            return False
        return (command == Command.WRITE and space == Space.UB) or \
            self.status()[0] != State.RUNNING

    def write(self, space, address, items):
        space = Space(space)
        if space in (Space.UB, Space.ACC):
            items = np.asarray(items, dtype=np.int64)
            if self._backdoor(Command.WRITE, space, address, len(items)):
                words = pack_items(self.cfg, space, items)
                self.transport.write_rows(space, address, np.array(words, dtype=np.uint32))
                return
        else:
            items = list(items)
        per = 0xFFFF
        limit = getattr(self.transport, "max_packet_words", None)
        if limit is not None:                 # a link that buffers whole packets (UART)
            per = max(1, (limit - 2) // item_words(self.cfg, space))
        for start in range(0, len(items), per):
            chunk = items[start:start + per]
            self._command(Command.WRITE, space, address + start, len(chunk),
                          pack_items(self.cfg, space, chunk))

    def read(self, space, address, count):
        space = Space(space)
        if self._backdoor(Command.READ, space, address, count):
            return unpack_items(self.cfg, space, self.transport.read_rows(space, address, count))
        items = []
        for start in range(0, count, 0xFFFF):
            n = min(0xFFFF, count - start)
            data, rcount = self._command(Command.READ, space, address + start, n)
            if rcount != n or len(data) != n * item_words(self.cfg, space):
                raise ProtocolError(f"read of {n} items returned {rcount} ({len(data)} words)")
            items.extend(unpack_items(self.cfg, space, data))
        return items

    def check_config(self):
        """Raise :class:`ConfigMismatch` unless the device was built from this driver's
        configuration: the fields its registers show (array size, data format, memory
        depths) are named with both values; the others are compared through the
        ``CONFIG`` register's fingerprint (:meth:`TPUConfig.fingerprint`)."""
        cfg = self.cfg
        expected = identity_registers(cfg)
        first = min(expected)
        words = self.read(Space.CSR, first, max(expected) - first + 1)
        device = {address: words[address - first] for address in expected}
        if device == expected:
            return

        def named(values):
            """(name, value) of the fields the registers show, INFO's taken apart."""
            return ([(name, (values[CSR.INFO] >> shift) & 0xFF) for name, shift, _ in INFO_FIELDS]
                    + [(address.name.lower(), values[address])
                       for address in (CSR.UB_DEPTH, CSR.ACC_DEPTH, CSR.IMEM_DEPTH)])
        differ = [f"{name} is {value} on the device, {ours} here"
                  for (name, value), (_, ours) in zip(named(device), named(expected))
                  if value != ours]
        fingerprint = device[CSR.CONFIG]
        if not differ:
            differ = [f"its CONFIG register reads {fingerprint:#010x} (the fingerprint of "
                      f"this configuration is {expected[CSR.CONFIG]:#010x}), so fields the "
                      f"other registers do not show differ: the accumulator or scalar "
                      f"format, ub_copy_depth, counter_width, unit_multipliers or a timing "
                      f"option" + (" (or the device predates the CONFIG register)"
                                   if fingerprint == 0 else "")]
        raise ConfigMismatch(
            f"the device was built from another TPUConfig than this host's {cfg}: "
            f"{'; '.join(differ)}. Give the host the configuration of the device's build "
            f"(a board's: get_board(name).variant(...) with the build's options)")

    def csr(self, address):
        return self.read(Space.CSR, address, 1)[0]

    def write_csr(self, address, value):
        self.write(Space.CSR, address, [value & 0xFFFFFFFF])

    def csr64(self, lo):
        lo_v, hi_v = self.read(Space.CSR, lo, 2)
        return lo_v | (hi_v << 32)

    def load_program(self, program, address=0):
        words = program.words if isinstance(program, Program) else [
            w if isinstance(w, int) else encode(w) for w in program]
        self.write(Space.IMEM, address, words)

    def start(self, pc=0):
        self._command(Command.START, 0, pc)

    def stop(self):
        self._command(Command.STOP)

    def clear(self):
        self._command(Command.CLEAR)

    def status(self):
        word = self.csr(CSR.STATUS)
        return State(word & 3), ErrorCode((word >> 8) & 0xF), word

    def wait(self, *, max_polls=1_000_000, on_poll=None):
        """Poll until the program leaves the running state. On an error, read what failed
        (code, address, instruction, counters), bring the device back to idle
        (:meth:`recover`) and raise :class:`TPUError`: the next command works. A
        ``KeyboardInterrupt`` while waiting stops the program the same way before it
        propagates. ``on_poll(cycles)`` is called at each poll of a run still going."""
        pause = 16
        try:
            for _ in range(max_polls):
                state, code, _ = self.status()
                if state != State.RUNNING:
                    break
                if on_poll is not None:
                    on_poll(self.csr64(CSR.CYCLES_LO))
                self.transport.idle(pause)
                pause = min(pause * 2, 4096)
            else:
                raise TimeoutError("the program is still running")
        except KeyboardInterrupt:
            self.recover()
            raise
        if state == State.ERROR:
            pc = self.csr(CSR.ERROR_PC)
            text = None
            if pc < self.cfg.imem_depth:
                try:
                    text = format_instruction(decode(self.read(Space.IMEM, pc, 1)[0]))
                except ValueError:
                    text = "illegal instruction word"
            stats = self.stats()
            self.recover()
            raise TPUError(code, pc, text, stats)
        return state

    def recover(self):
        """Bring the device to the idle state from any state: stop a running program, wait
        until its engines have finished, clear an error (or done) state. Memories, index
        and configuration registers and the counters keep their values."""
        state, _, _ = self.status()
        if state == State.RUNNING:
            self.stop()
            for _ in range(1_000_000):
                state, _, _ = self.status()
                if state != State.RUNNING:
                    break
                self.transport.idle(16)
            else:
                raise TimeoutError("the program does not stop")
        if state != State.IDLE:
            self.clear()

    def run(self, program=None, *, pc=0, watchdog=0):
        """Load ``program`` (if given) at address 0, start it at ``pc``, wait for it."""
        self.set_watchdog(watchdog)
        if program is not None:
            self.load_program(program)
        self.start(pc)
        self.wait()
        return self.stats()

    def set_watchdog(self, cycles):
        """The cycle budget of the following runs (0: none); a run that reaches it stops
        with the WATCHDOG error."""
        width = self.cfg.counter_width
        if (not isinstance(cycles, int) or isinstance(cycles, bool)
                or not 0 <= cycles < 1 << width):
            raise ValueError(f"watchdog must be a cycle count from 0 (none) to 2**{width} - 1 "
                             f"(the counter width), not {cycles!r}")
        self.write(Space.CSR, CSR.WATCHDOG_LO, [cycles & 0xFFFFFFFF, cycles >> 32])

    def stats(self):
        """The counters of the last run (one read of the status and counter registers)."""
        csrs = self.read(Space.CSR, CSR.STATUS, CSR.INSTRUCTIONS_HI + 1)

        def counter(lo):
            return csrs[lo] | (csrs[lo + 1] << 32)

        word = csrs[CSR.STATUS]
        return RunStats(
            cycles=counter(CSR.CYCLES_LO),
            array_busy_cycles=counter(CSR.ARRAY_BUSY_LO),
            macs=counter(CSR.MACS_LO),
            instructions=counter(CSR.INSTRUCTIONS_LO),
            n=self.cfg.n,
            overflow_array=bool(word >> 16 & 1),
            overflow_vector=bool(word >> 17 & 1),
            overflow_gd=bool(word >> 18 & 1),
        )
