#!/usr/bin/env python3
"""Benchmarks: cycles and array utilization (GEMMs, training steps), simulation speed of the
backends, and (with --synth) FPGA resources and Fmax through the yowasp tools.

Cycle counts come from the reference model, which is cycle-exact with the gateware (the
differential tests check it); simulation speeds are measured wall-clock; resources and Fmax
come from Yosys and nextpnr runs. Writes docs/benchmarks.md (or --out).

    python scripts/bench.py                 # cycles, utilization, simulation speed
    python scripts/bench.py --synth         # + ECP5 resources, Fmax, scaling plot; iCE40 (slow)
    python scripts/bench.py --boards        # + board bitstream builds (slow)
"""

import argparse
import math
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

from dataclasses import replace

import numpy as np

from tinytpu_hdl import MLP, Accelerator, TPUConfig
from tinytpu_hdl.compiler import CompileError
from tinytpu_hdl.gateware.vector_unit import VectorUnit
from tinytpu_hdl.isa import Op
from tinytpu_hdl.synthesis import UP5K, ice40_blocks, synth_ecp5, synth_ice40

ROOT = Path(__file__).resolve().parent.parent


def scalesim_ws(m, k, n_out, n):
    """SCALE-Sim v2 weight-stationary cycles: folds * (3N + M - 2), no load overlap."""
    return math.ceil(k / n) * math.ceil(n_out / n) * (3 * n + m - 2)


def ideal_overlapped(m, k, n_out, n):
    """Every fold streams its M rows back to back; only the first load and the array's fill
    and drain (2N) are exposed."""
    return math.ceil(k / n) * math.ceil(n_out / n) * m + 3 * n


def gemm_table(sizes, gemms):
    rows = ["| M x K x N | array | cycles | MACs | utilization | SCALE-Sim WS | measured / SCALE-Sim | ideal (overlapped) | measured / ideal |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    rng = np.random.default_rng(0)
    for m, k, n_out in gemms:
        a = rng.integers(-256, 256, (m, k))
        b = rng.integers(-256, 256, (k, n_out))
        for n in sizes:
            acc = Accelerator(TPUConfig(n=n))
            try:
                got = acc.matmul_raw(a, b)
            except CompileError as exc:
                rows.append(f"| {m}x{k}x{n_out} | {n}x{n} | does not fit: {exc} | | | | | | |")
                continue
            assert np.array_equal(got, a @ b)
            s = acc.stats
            macs = m * k * n_out
            util = macs / (s.cycles * n * n)
            ss = scalesim_ws(m, k, n_out, n)
            ideal = ideal_overlapped(m, k, n_out, n)
            rows.append(f"| {m}x{k}x{n_out} | {n}x{n} | {s.cycles:,} | {macs:,} | "
                        f"{100 * util:.1f}% | {ss:,} | {s.cycles / ss:.2f} | {ideal:,} | "
                        f"{s.cycles / ideal:.2f} |")
            print(rows[-1], flush=True)
    return rows


def training_table(sizes):
    nets = [("XOR 2-2-1", [2, 2, 1], 4, ["leaky_relu", "leaky_relu"]),
            ("digits 64-32-10", [64, 32, 10], 32, ["leaky_relu", "none"]),
            ("MLP 784-64-10", [784, 64, 10], 32, ["leaky_relu", "none"])]
    rows = ["| network | batch | array | memories | cycles per step | useful MACs | utilization | instructions |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    # The memories of the ULX3S's 8x8 build (its default until 2026-12-05) for what the
    # default buffer cannot hold: the rows below do not change with the board's default.
    large = TPUConfig(ub_depth=16384, ub_copy_depth=7168)
    rng = np.random.default_rng(1)
    for name, layer_sizes, batch, acts in nets:
        model = MLP.random(layer_sizes, seed=0, activations=acts, leak=0.1)
        x = rng.uniform(0, 1, (batch, layer_sizes[0]))
        y = rng.uniform(0, 1, (batch, layer_sizes[-1]))
        pairs = list(zip(layer_sizes, layer_sizes[1:]))
        # forward, weight gradients for every layer, input gradients for all but the first
        macs = batch * (2 * sum(i * o for i, o in pairs) + sum(i * o for i, o in pairs[1:]))
        for n in sizes:
            cfg, where = TPUConfig(n=n), "default"
            try:
                acc = Accelerator(cfg)
                acc.train(model.copy(), x, y, lr=0.01, epochs=1, batch_size=batch,
                          record_loss=False)
            except CompileError:
                # Too large for the default buffer: a 16,384-row buffer.
                cfg, where = replace(large, n=n), "large"
                try:
                    acc = Accelerator(cfg)
                    acc.train(model.copy(), x, y, lr=0.01, epochs=1, batch_size=batch,
                              record_loss=False)
                except CompileError as exc:
                    rows.append(f"| {name} | {batch} | {n}x{n} | | does not fit: "
                                f"{str(exc).split(';')[0]} | | | |")
                    print(rows[-1], flush=True)
                    continue
            def memories(c):
                copy = f", {c.ub_copy_depth:,} in the second copy" if c.ub_copy_depth else ""
                return f"{where} ({c.ub_depth:,} rows{copy})"
            runs = [(acc.stats, memories(cfg))]
            # The same memories with overlap_units toggled (on where it is off: the buffer
            # held twice), and one vector pass at a time, for comparison.
            others = []
            if n == 8 or not cfg.overlap_units:
                others.append((replace(cfg, overlap_units=not cfg.overlap_units,
                                       ub_copy_depth=None),
                               "overlap_units off" if cfg.overlap_units else
                               "overlap_units on (the buffer held twice)"))
            if cfg.chains_passes and n in (2, 8):
                others.append((replace(cfg, chain_passes=False), "chain_passes off"))
            for other, label in others:
                acc = Accelerator(other)
                acc.train(model.copy(), x, y, lr=0.01, epochs=1, batch_size=batch,
                          record_loss=False)
                runs.append((acc.stats, f"{memories(other)}, {label}"))
            for s, memories in runs:
                rows.append(f"| {name} | {batch} | {n}x{n} | {memories} | {s.cycles:,} | "
                            f"{macs:,} | {100 * macs / (s.cycles * n * n):.1f}% | "
                            f"{s.instructions:,} |")
                print(rows[-1], flush=True)
    return rows


def shared_multipliers_table():
    """Cycles with the units' multipliers shared (one per lane, ``unit_multipliers=
    "shared"``) against a block per multiply (the default), on the same work."""
    rows = ["| work | array | memories | cycles, blocks (default) | cycles, shared | "
            "shared / blocks | VPU rows (P = 1 / 2 / 3) | GD rows |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    rng = np.random.default_rng(2)
    xor = ("XOR 2-2-1 training step, batch 4", [2, 2, 1], 4, ["leaky_relu", "leaky_relu"])
    digits = ("digits 64-32-10 training step, batch 32", [64, 32, 10], 32,
              ["leaky_relu", "none"])
    for (name, sizes, batch, acts), n in ((xor, 2), (digits, 8), (digits, 12)):
        model = MLP.random(sizes, seed=0, activations=acts, leak=0.1)
        x = rng.uniform(0, 1, (batch, sizes[0]))
        y = rng.uniform(0, 1, (batch, sizes[-1]))
        cycles, rows_by = [], None
        for mode in ("blocks", "shared"):
            cfg = TPUConfig(n=n, unit_multipliers=mode)
            acc = Accelerator(cfg, timeline=mode == "shared")
            acc.train(model.copy(), x, y, lr=2 ** -7, epochs=1, batch_size=batch,
                      record_loss=False)
            cycles.append(acc.stats.cycles)
            if mode == "shared":
                vpu, gd = [0, 0, 0], 0
                for event in acc.timeline():
                    ins = event.instruction
                    if ins.op is Op.VPU:
                        vpu[VectorUnit.row_interval(cfg, ins.flags & 0xF) - 1] += ins.count
                    elif ins.op is Op.GD:
                        gd += ins.count
                rows_by = vpu, gd
        vpu, gd = rows_by
        rows.append(f"| {name} | {n}x{n} | default | {cycles[0]:,} | {cycles[1]:,} | "
                    f"{cycles[1] / cycles[0]:.2f} | {' / '.join(f'{v:,}' for v in vpu)} | "
                    f"{gd:,} |")
        print(rows[-1], flush=True)
    a = rng.integers(-256, 256, (256, 256))
    b = rng.integers(-256, 256, (256, 256))
    for n in (8, 12):
        cycles = []
        for mode in ("blocks", "shared"):
            acc = Accelerator(TPUConfig(n=n, unit_multipliers=mode))
            assert np.array_equal(acc.matmul_raw(a, b), a @ b)
            cycles.append(acc.stats.cycles)
        rows.append(f"| GEMM 256x256x256 | {n}x{n} | default | {cycles[0]:,} | {cycles[1]:,} | "
                    f"{cycles[1] / cycles[0]:.2f} | (no multiply) | - |")
        print(rows[-1], flush=True)
    return rows


def step_anatomy(png):
    """Where the cycles of one digits training step go on TPUConfig(n=8): each engine's busy
    cycles (issue to end of its instructions) and the step as a per-engine timeline."""
    from tinytpu_hdl.demos.common import save_step_timeline
    from tinytpu_hdl.runtime.timeline import engine_busy
    cfg, batch = TPUConfig(n=8), 32
    model = MLP.random([64, 32, 10], seed=0, activations=["leaky_relu", "none"], leak=0.1)
    rng = np.random.default_rng(1)
    x, y = rng.uniform(0, 1, (batch, 64)), rng.uniform(0, 1, (batch, 10))
    events = save_step_timeline(cfg, model, x, y, batch_size=batch, lr=2 ** -6, path=png,
                                title="digits 64-32-10, batch 32, N=8")
    if events is None:
        return []
    busy, first, last = engine_busy(events)
    rows = ["", "### One digits training step by engine (64-32-10, batch 32, `TPUConfig(n=8)`)",
            "", "Each engine's busy cycles: the union of its instructions' spans from issue to "
            "the end of their work, over the step's span (from the first decode to the last "
            "end). The loader's weight loads overlap the matmuls (double-buffered weights); a "
            "vector or gradient-descent pass starts while the array drains the last matmul's "
            "rows (`chase_matmul`), and before they have all streamed when it writes none "
            "of them; the next weight loads and matmuls run beside a pass unless they "
            "touch its rows (`overlap_units`), but a load waits for a pass that reads aux "
            "rows or parameters (the loader's port), and a pass waits for the one before "
            "it: see the timeline.", "",
            "| engine | instructions | busy cycles | share of the step |", "| --- | --- | --- | --- |"]
    counts = {}
    for ev in events:
        counts[ev.engine] = counts.get(ev.engine, 0) + 1
    for engine in sorted(busy, key=lambda e: -busy[e]):
        rows.append(f"| {engine} | {counts[engine]:,} | {busy[engine]:,} | "
                    f"{100 * busy[engine] / (last - first):.1f}% |")
    rows.append(f"| (step) | {len(events):,} | {last - first:,} | 100% |")
    rows += ["", f"![one training step]({png.name})"]
    return rows


def _metered(cfg):
    """An accelerator on the reference model that counts its serial-link bytes."""
    from tinytpu_hdl.runtime.driver import HostDriver
    from tinytpu_hdl.runtime.uart import LinkMeter
    acc = Accelerator(cfg)
    acc.transport = LinkMeter(acc.transport)
    acc.driver = HostDriver(acc.transport)
    return acc


def anysize_tables():
    """Large work on the default configuration (and the boards'): GEMMs, MNIST-sized
    inference, digits training; runs, host words, utilization; the boards' link time."""
    from tinytpu_hdl.boards import get_board
    from tinytpu_hdl.compiler.plan import Read, Write
    from tinytpu_hdl.demos.digits import digits_model, fitting_size, load_digits_split
    rng = np.random.default_rng(2)
    rows = ["| work | configuration | result | runs | device cycles | utilization | host words written / read | host words per MAC |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    board_rows = ["| board | work | device time | link time at the baud rate | link share | frames |",
                  "| --- | --- | --- | --- | --- | --- |"]

    def record(work, cfg_name, acc, macs, result):
        s, plan = acc.stats, acc.last_plan
        written, read = plan.words(Write), plan.words(Read)
        rows.append(f"| {work} | {cfg_name} | {result} | {s.runs:,} | {s.cycles:,} | "
                    f"{100 * s.utilization:.1f}% | {written:,} / {read:,} | "
                    f"{(written + read) / macs:.4f} |")
        print(rows[-1], flush=True)

    def board(name, work, acc):
        b = get_board(name)
        device = acc.stats.cycles / b.clock_hz
        link = acc.transport.seconds(b.baud)
        board_rows.append(f"| {name} ({b.cfg.n}x{b.cfg.n}, {b.clock_hz / 1e6:.3g} MHz, "
                          f"{b.baud:,} baud) | {work} | {device * 1e3:,.1f} ms | "
                          f"{link:,.1f} s | {100 * link / (link + device):.1f}% | "
                          f"{acc.transport.exchanges:,} |")
        print(board_rows[-1], flush=True)

    default = TPUConfig(n=8)
    for size in (256, 1024):
        a = rng.integers(-256, 256, (size, size))
        b = rng.integers(-256, 256, (size, size))
        acc = _metered(default)
        got = acc.matmul_raw(a, b)
        record(f"GEMM {size}^3", "TPUConfig(n=8)", acc, size ** 3,
               "exact" if np.array_equal(got, a @ b) else "WRONG")
        if size == 256:
            acc = _metered(get_board("ulx3s-85f").cfg)
            got = acc.matmul_raw(a, b)
            record(f"GEMM {size}^3", "ulx3s-85f board", acc, size ** 3,
                   "exact" if np.array_equal(got, a @ b) else "WRONG")
            board("ulx3s-85f", f"GEMM {size}^3", acc)

    model = MLP.random([784, 64, 10], seed=0, activations=["leaky_relu", "none"], leak=0.01)
    x = rng.uniform(0, 1, (10_000, 784))
    want = model.forward_float(x)
    for cfg_name, cfg in (("TPUConfig(n=8)", default),
                          ("ulx3s-85f board", get_board("ulx3s-85f").cfg)):
        acc = _metered(cfg)
        got = acc.forward(model, x)
        err = float(np.max(np.abs(got - want)))
        record("784-64-10 inference, 10,000 samples", f"{cfg_name} "
               f"({acc.last_plan.info['form']})", acc, 10_000 * (784 * 64 + 64 * 10),
               f"max error vs float64 {err:.3f}")
        if cfg_name.startswith("ulx3s"):
            board("ulx3s-85f", "784-64-10 inference, 10,000 samples", acc)

    xs, ys, _, _ = load_digits_split()
    onehot = np.eye(10)[ys]
    for cfg_name, cfg in (("TPUConfig(n=8)", default),
                          ("ulx3s-85f board", get_board("ulx3s-85f").cfg),
                          ("icebreaker board", get_board("icebreaker").cfg)):
        hidden, batch = fitting_size(cfg)
        batches = len(xs) // batch
        macs = batches * batch * (2 * (64 * hidden + hidden * 10) + hidden * 10)
        acc = _metered(cfg)
        losses = acc.train(digits_model(hidden), xs, onehot, lr=0.5, epochs=1,
                           batch_size=batch)
        work = f"digits 64-{hidden}-10 training, 1 epoch (batch {batch})"
        record(work, f"{cfg_name}, {acc.last_plan.info['batches per run']} batches per run",
               acc, macs, f"loss {losses[-1]:.4f}")
        if cfg_name.endswith("board"):
            board(cfg_name.split()[0], work, acc)
    return rows, board_rows


def sim_speed_table(n, pysim_batches):
    from tinytpu_hdl.demos.digits import digits_model, load_digits_split
    x, y, _, _ = load_digits_split()
    onehot = np.eye(10)[y]
    cfg = TPUConfig(n=n)
    batch = 32
    rows = ["| backend | work measured | simulated cycles | wall time | cycles/s | one digits epoch (wall) | vs pysim |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    results = {}
    epoch_cycles = None
    for label, backend, options in (("reference", "reference", {}),
                                    ("verilator", "verilator", {}),
                                    ("verilator, backdoor", "verilator", {"backdoor": True}),
                                    ("verilator, profile-guided", "verilator",
                                     {"profile_guided": True}),
                                    ("pysim", "pysim", {})):
        try:
            acc = Accelerator(cfg, backend=backend, **options)
        except Exception as exc:                                  # missing toolchain
            rows.append(f"| {label} | not available: {exc} | | | | | |")
            continue
        samples = len(x) if backend != "pysim" else pysim_batches * batch
        start = time.perf_counter()
        acc.train(digits_model(), x[:samples], onehot[:samples], lr=0.5, epochs=1,
                  batch_size=batch, record_loss=False)
        wall = time.perf_counter() - start
        cycles = acc.stats.cycles
        if backend == "reference":
            epoch_cycles = cycles
        rate = cycles / wall
        results[label] = rate
        work = "1 epoch" if backend != "pysim" else f"{pysim_batches} batches"
        epoch = wall if backend != "pysim" else epoch_cycles / rate
        note = "" if backend != "pysim" else " (projected)"
        rows.append(f"| {label} | {work} | {cycles:,} | {wall:.2f} s | {rate:,.0f} | "
                    f"{epoch:.1f} s{note} | RATIO_{len(results) - 1} |")
        print(rows[-1], flush=True)
    base = results.get("pysim")
    rates = list(results.values())
    rows = [re.sub(r"RATIO_(\d+)", lambda mt: f"{rates[int(mt.group(1))] / base:,.0f}x" if base
                   else "", r) for r in rows]
    return rows


def verilator_gemm_speed(n, size=256):
    """The Verilator backend on a whole matmul call, for each build (the exported Verilog,
    the optimized one the backend uses, the latter profile-guided) with and without the
    backdoor: every simulated clock cycle (runs, host transfers, polling) per second of
    wall time."""
    from tinytpu_hdl.runtime.verilator import VerilatorTransport, build_library
    rows = ["", f"Verilator backend on a whole `acc.matmul` of {size}^3 (`TPUConfig(n={n})`, "
            "random float matrices, best of two; simulated cycles are every clock cycle the "
            "simulation ran, device cycles the runs' `CYCLES`). Builds: the Verilog as "
            "`tinytpu verilog` exports it; optimized (`to_verilog(..., optimize=True)`, "
            "what the backend builds by default); optimized and profile-guided "
            "(`profile_guided=True`):", "",
            "| build | host data path | device cycles | simulated cycles | wall time | "
            "simulated cycles/s | vs exported | M MAC/s |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    rng = np.random.default_rng(0)
    a, b = rng.uniform(-1, 1, (size, size)), rng.uniform(-1, 1, (size, size))
    cfg = TPUConfig(n=n)
    base = {}
    for build, options in (("exported", {"optimize": False}), ("optimized", {}),
                           ("optimized, profile-guided", {"profile_guided": True})):
        try:
            library = build_library(cfg, **options)
        except Exception as exc:                                  # missing toolchain
            rows.append(f"| {build} | not available: {exc} | | | | | | |")
            continue
        for label, backdoor in (("host protocol, 1 word per cycle", False),
                                ("backdoor", True)):
            acc = Accelerator(cfg, transport=VerilatorTransport(cfg, library=library,
                                                                backdoor=backdoor))
            best = None
            for _ in range(2):
                first = acc.transport.cycle
                start = time.perf_counter()
                got = acc.matmul(a, b)
                wall = time.perf_counter() - start
                simulated = acc.transport.cycle - first
                if best is None or wall < best[0]:
                    best = (wall, simulated)
            assert np.abs(got - a @ b).max() < 0.05 * size ** 0.5
            wall, simulated = best
            rate = simulated / wall
            base.setdefault(label, rate)
            rows.append(f"| {build} | {label} | {acc.stats.cycles:,} | {simulated:,} | "
                        f"{wall:.2f} s | {rate:,.0f} | {rate / base[label]:.2f}x | "
                        f"{size ** 3 / wall / 1e6:.1f} |")
            print(rows[-1], flush=True)
            acc.close()
    return rows


def verilator_warm_start(n):
    """Seconds from a new Python process to a first result from the Verilator backend when
    the library is cached (imports included; best of three)."""
    import subprocess
    from tinytpu_hdl.runtime.verilator import build_library
    try:
        build_library(TPUConfig(n=n))
    except Exception as exc:                                      # missing toolchain
        return ["", f"Verilator warm start: not available ({exc})"]
    code = ("import time; t = time.perf_counter(); from tinytpu_hdl import Accelerator, "
            f"TPUConfig; acc = Accelerator(TPUConfig(n={n}), backend='verilator'); "
            "acc.matmul([[1.0]], [[1.0]]); "
            "print(time.perf_counter() - t)")
    times = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  check=True).stdout.split()[-1]) for _ in range(3)]
    return ["", f"Verilator warm start (`Accelerator(TPUConfig(n={n}), backend=\"verilator\")` "
            f"and a 1x1 matmul, in a new Python process, the library cached, imports included, best of three): "
            f"{min(times):.2f} s."]


def reference_gemm_speed(n, sizes=(256, 512)):
    """The reference model's speed on whole matmul calls (compile, transfers, runs), in
    multiply-accumulates per second of wall time, best of two."""
    rows = ["", f"Reference model on whole `acc.matmul` calls (`TPUConfig(n={n})`, random "
            "float matrices, best of two):", "",
            "| GEMM | runs | device cycles | wall time | M MAC/s |", "| --- | --- | --- | --- | --- |"]
    rng = np.random.default_rng(0)
    for size in sizes:
        acc = Accelerator(TPUConfig(n=n))
        a, b = rng.uniform(-1, 1, (size, size)), rng.uniform(-1, 1, (size, size))
        best = None
        for _ in range(2):
            start = time.perf_counter()
            got = acc.matmul(a, b)
            wall = time.perf_counter() - start
            best = wall if best is None else min(best, wall)
        assert np.abs(got - a @ b).max() < 0.05 * size ** 0.5
        rows.append(f"| {size}^3 | {acc.stats.runs:,} | {acc.stats.cycles:,} | {best:.2f} s | "
                    f"{size ** 3 / best / 1e6:.1f} |")
        print(rows[-1], flush=True)
    return rows


def synth_table(sizes, keep):
    rows = ["| array | LUT4 | FF | MULT18X18D | DP16KD | Fmax (MHz) | critical path starts in | place-and-route time |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    results = {}
    for n in sizes:
        work = Path(keep) / f"ecp5_n{n}" if keep else Path(tempfile.mkdtemp()) / f"n{n}"
        res = synth_ecp5(n, work)
        results[n] = res
        runs = [(f"{n}x{n}", res)]
        if "MULT18X18D" in res.get("error", ""):
            # Too many multiplier blocks: the units sharing one per lane instead.
            shared = synth_ecp5(TPUConfig(n=n, unit_multipliers="shared"),
                                work.parent / f"{work.name}_shared")
            runs.append((f"{n}x{n}, shared unit multipliers", shared))
            if "fmax" in shared:
                results[n] = shared
        for label, res in runs:
            if "error" in res and "LUT4" not in res:
                rows.append(f"| {label} | {res['error']} | | | | | | |")
            else:
                fmax = f"{res['fmax']:.1f}" if res.get("fmax") else res.get("error", "-")
                rows.append(f"| {label} | {res['LUT4']:,} | {res['FF']:,} | {res['DSP']} | "
                            f"{res['BRAM']} | {fmax} | {res.get('path_start', '-')} | "
                            f"{res.get('pnr_seconds', '-')} s |")
            print(rows[-1], flush=True)
    return rows, results


def ice40_table(sizes, keep):
    rows = ["| array | SB_LUT4 | SB_DFF | SB_CARRY | SB_MAC16 | EBR | fits the UP5K? |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for n in sizes:
        work = Path(keep) / f"ice40_n{n}" if keep else Path(tempfile.mkdtemp()) / f"n{n}"
        res = synth_ice40(n, work)
        if "error" in res:
            rows.append(f"| {n}x{n} | {res['error']} | | | | | |")
        else:
            over = [f"{res[k]} of {UP5K[k]} {name}" for k, name in
                    (("DSP", "SB_MAC16"), ("EBR", "EBR")) if res[k] > UP5K[k]]
            verdict = ("no: needs " + ", ".join(over)) if over else \
                "yes by DSP and EBR count (logic cells: see the board build)"
            rows.append(f"| {n}x{n} | {res['LUT4']:,} | {res['FF']:,} | {res['CARRY']:,} | "
                        f"{res['DSP']} / {UP5K['DSP']} | {res['EBR']} / {UP5K['EBR']} | "
                        f"{verdict} |")
        print(rows[-1], flush=True)
    return rows


#: The TPU's blocks as :func:`ice40_blocks` names them, grouped for the table.
ICE40_BLOCKS = [("control unit", ("control",)), ("vector unit", ("vector",)),
                ("gradient-descent unit", ("gd",)), ("host interface", ("host",)),
                ("matmul engine", ("matmul",)), ("array (PEs)", ("array",)),
                ("weight loader", ("loader",)), ("unified buffer", ("ub",)),
                ("accumulators", ("acc",)), ("instruction memory", ("imem",)),
                ("top (port multiplexers)", ("",))]


def ice40_block_table(sizes, keep):
    """Cells per block of the TPU (:func:`ice40_blocks`), one column group per size."""
    found = {}
    for n in sizes:
        work = Path(keep) / f"ice40_blocks_n{n}" if keep else Path(tempfile.mkdtemp()) / f"b{n}"
        found[n] = ice40_blocks(n, work)
    head = "| block | " + " | ".join(f"{n}x{n}: LUT4 / FF / CARRY / MAC16 / EBR"
                                      for n in sizes) + " |"
    rows = [head, "| --- |" + " --- |" * len(sizes)]

    def total(blocks, prefixes):
        picked = [c for name, c in blocks.items()
                  if any(name == p or (p and name.startswith(p + ".")) for p in prefixes)]
        return {k: sum(c[k] for c in picked) for k in ("LUT4", "FF", "CARRY", "DSP", "EBR")}

    for label, prefixes in ICE40_BLOCKS + [("sum", None)]:
        cells = []
        for n in sizes:
            blocks = found[n]
            if "error" in blocks:
                cells.append(blocks["error"])
                continue
            c = total(blocks, list(blocks) if prefixes is None else prefixes)
            cells.append(f"{c['LUT4']:,} / {c['FF']:,} / {c['CARRY']:,} / {c['DSP']} / "
                         f"{c['EBR']}")
        rows.append(f"| {label} | " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    return rows


#: (board, array size or None for the board's default) built by ``--boards``.
BOARD_BUILDS = [("icebreaker", None), ("ulx3s-85f", 2), ("ulx3s-85f", 4), ("ulx3s-85f", None)]


def board_table(keep):
    from tinytpu_hdl.boards import get_board
    from tinytpu_hdl.build import BuildError, build_board
    rows = ["| board | array | logic | FF | DSP | block RAM | Fmax | TPU clock | build time |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, n in BOARD_BUILDS:
        board = get_board(name)
        if n is not None:
            board = board.with_n(n)
        n = board.cfg.n
        where = Path(keep) / f"board_{name}_n{n}" if keep else Path(tempfile.mkdtemp())
        try:
            report = build_board(board, build_dir=where)
        except BuildError as exc:
            rows.append(f"| {name} | {n}x{n} | failed: {' '.join(str(exc).split())[:200]} "
                        "| | | | | | |")
            print(rows[-1], flush=True)
            continue
        ecp5 = "TRELLIS_COMB" in report.utilization
        logic, dsp, ram = (("TRELLIS_COMB", "MULT18X18D", "DP16KD") if ecp5 else
                           ("ICESTORM_LC", "ICESTORM_DSP", "ICESTORM_RAM"))

        def used(key):
            u, a = report.utilization.get(key, (0, 0))
            return f"{u:,} / {a:,} {key}"
        ff = f"{report.utilization['TRELLIS_FF'][0]:,}" if ecp5 else "(in the LCs)"
        rows.append(f"| {name} | {n}x{n} | {used(logic)} | {ff} | {used(dsp)} | {used(ram)} | "
                    f"{report.fmax_mhz:.1f} MHz | {report.clock_mhz:.3g} MHz | "
                    f"{report.seconds:.0f} s |")
        print(rows[-1], flush=True)
    return rows


def scaling_plot(results, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    ns = sorted(n for n, r in results.items() if "LUT4" in r)
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5), dpi=100)
    ax[0].plot(ns, [results[n]["LUT4"] for n in ns], "o-", label="LUT4")
    ax[0].plot(ns, [results[n]["DSP"] * 100 for n in ns], "s-", label="MULT18X18D x 100")
    ax[0].set_xlabel("N")
    ax[0].legend()
    ax[0].set_title("ECP5-85F resources")
    fm = [n for n in ns if results[n].get("fmax")]
    ax[1].plot(fm, [results[n]["fmax"] for n in fm], "o-")
    ax[1].set_xlabel("N")
    ax[1].set_ylabel("MHz")
    ax[1].set_title("Fmax after place and route")
    fig.tight_layout()
    fig.savefig(path)
    return True


#: Everything below this line of docs/benchmarks.md is written by hand and kept when the
#: script rewrites the tables above it.
NOTES_MARKER = "<!-- Notes below this line are kept when scripts/bench.py rewrites the tables. -->"


#: Report sections, in document order: (key, title).
SECTIONS = [
    ("gemm", "GEMM cycles and utilization"),
    ("training", "Training steps"),
    ("anysize", "Any size on the default configuration"),
    ("simspeed", "Simulation speed (digits training, N=8)"),
    ("shared", "Shared unit multipliers: cycles"),
    ("synth", "FPGA resources and Fmax: whole TPU on ECP5 LFE5U-85F (CABGA381)"),
    ("ice40", "iCE40 UP5K (SG48): synthesis"),
    ("boards", "Board builds (`tinytpu build`)"),
]

_PROVENANCE = re.compile(r"^_Measured with `(.*)`, (\d{4}-\d{2}-\d{2})\._$", re.M)


def _split_sections(text):
    """{title: body} of the ``## `` sections of a report above the notes marker, and the
    command and date of its header (for sections written before they carried their own)."""
    text = text.split(NOTES_MARKER, 1)[0]
    head = re.search(r"command `([^`]*)`; (\d{4}-\d{2}-\d{2})", text)
    parts = re.split(r"^## ", text, flags=re.M)
    found = {}
    for part in parts[1:]:
        title, _, body = part.partition("\n")
        body = body.strip("\n")
        if head and not _PROVENANCE.search(body):
            body = f"_Measured with `{head.group(1)}`, {head.group(2)}._\n\n" + body
        found[title.strip()] = body
    return found


def write_report(out, header, sections):
    """Write ``header`` and ``sections`` ({title: body}) to ``out``. Sections of the
    present file that this run did not produce are kept (each names the command and date
    that produced it), in the order of :data:`SECTIONS`, and so is what follows
    :data:`NOTES_MARKER` (the analysis written below the tables)."""
    old = out.read_text() if out.exists() else ""
    merged = _split_sections(old)
    merged.update(sections)
    order = [title for _, title in SECTIONS] + [t for t in merged
                                                 if t not in {t for _, t in SECTIONS}]
    text = header.rstrip("\n") + "\n"
    for title in order:
        if title in merged:
            text += f"\n## {title}\n\n{merged[title]}\n"
    if NOTES_MARKER in old:
        text += "\n" + NOTES_MARKER + old.split(NOTES_MARKER, 1)[1]
    out.write_text(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--synth", action="store_true", help="also run Yosys + nextpnr (slow)")
    parser.add_argument("--synth-sizes", type=int, nargs="+", default=[2, 4, 8, 12])
    parser.add_argument("--ice40-sizes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--boards", action="store_true",
                        help="also build the board bitstreams (slow: the 8x8 ULX3S takes "
                             "tens of minutes)")
    parser.add_argument("--only", nargs="+", choices=[k for k, _ in SECTIONS],
                        help="measure only these sections (the others stay as they are in "
                             "the report)")
    parser.add_argument("--keep", help="keep synthesis files in this folder")
    parser.add_argument("--pysim-batches", type=int, default=2)
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks.md"))
    args = parser.parse_args()

    wanted = set(args.only or ["gemm", "training", "anysize", "simspeed"] +
                 (["synth", "ice40"] if args.synth else []) + (["boards"] if args.boards else []))
    command = "python scripts/bench.py " + " ".join(sys.argv[1:])
    stamp = f"_Measured with `{command.strip()}`, {time.strftime('%Y-%m-%d')}._"
    header = "\n".join([
        "# Benchmarks", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}. Each section names the command and date that "
        "produced it (`python scripts/bench.py --only SECTION` re-measures one).", "",
        "Cycle counts are the hardware's `CYCLES` counter as computed by the reference "
        "model, which the differential tests check against the gateware cycle for "
        "cycle. Utilization = useful MACs / (cycles x N^2)."])
    titles = dict(SECTIONS)
    out = {}

    def section(key, lines):
        out[titles[key]] = "\n".join([stamp, ""] + lines)
        write_report(Path(args.out), header, out)          # after each section

    if "gemm" in wanted:
        section("gemm", [
            "SCALE-Sim v2's weight-stationary model: `ceil(K/N) * ceil(N/N) * (3N + M - 2)` "
            "(it does not overlap weight loads). Ideal: every fold's M rows back to back "
            "plus one fill and drain. Default memories of each array size.", ""]
            + gemm_table(args.sizes, [(4, 2, 2), (64, 64, 64), (64, 256, 256),
                                      (256, 256, 256)]))
    if "training" in wanted:
        section("training", [
            "One SGD step (forward, loss derivative, backward, weight gradients, update) of "
            "one batch, as the compiler emits it.", ""] + training_table(args.sizes)
            + step_anatomy(ROOT / "docs" / "training-step.png"))
    if "anysize" in wanted:
        anysize, boards = anysize_tables()
        section("anysize", [
            "`TPUConfig(n=8)` with its default memories (unified buffer 4,096 rows, "
            "accumulators 512 rows, instruction memory 256 words), and the boards' "
            "configurations. Work larger than the chip runs as a sequence of program "
            "runs with host transfers in between (`acc.last_plan`); cycles and "
            "utilization count the device's cycles of those runs, host words are the "
            "32-bit words of the transfers' data (headers excluded).", ""] + anysize + [
            "", "### On the boards: device time and serial-link time", "",
            "The same plans on each board's configuration: device time from the cycle "
            "count at the board's TPU clock; link time from the bytes of every frame the "
            "UART bridge carries (commands and responses, 8N1) at the board's baud rate. "
            "The USB adapter's latency per exchange (FTDI latency timer, up to 16 ms) is "
            "not included. Computed from the reference model, not measured on a board.",
            ""] + boards)
    if "simspeed" in wanted:
        section("simspeed", sim_speed_table(8, args.pysim_batches) + reference_gemm_speed(8)
                + verilator_gemm_speed(8) + verilator_warm_start(8))
    if "shared" in wanted:
        section("shared", [
            "`TPUConfig(unit_multipliers=\"shared\")` gives the vector and "
            "gradient-descent units one multiplier block per lane between them instead "
            "of five (what lets a 12x12 fit the ECP5-85F's 156 MULT18X18D). A vpu pass "
            "then reads a row every P cycles (P from 1 to 3: the multiplies its pathway "
            "uses), a gd pass every 2. Cycles of the reference model (the differential "
            "tests and the fuzzer check the gateware against it in this configuration "
            "too); rows: the passes' rows by their P.", ""]
            + shared_multipliers_table())
    if "synth" in wanted:
        rows, results = synth_table(args.synth_sizes, args.keep)
        plot = ROOT / "docs" / "scaling.png"
        extra = ["", "![scaling](scaling.png)"] if scaling_plot(results, plot) else []
        section("synth", [
            "Yosys `synth_ecp5` (flattened; LUTs mapped by the classic `abc`, see "
            "`tinytpu_hdl.build.ecp5_synthesis`), nextpnr-ecp5 `--out-of-context` (no pins) "
            "with the static placer (`--placer static`, seed 1), target 100 MHz, default "
            "memories (4,096-row buffer, 512 accumulator rows, 256 instructions).", ""]
            + rows + extra)
    if "ice40" in wanted:
        section("ice40", [
            "Yosys `synth_ice40 -dsp` of the TPU as the iCEBreaker builds it (its "
            "board configuration, iCE40 gateware) for each array size; the UP5K has "
            "5,280 logic cells, 8 SB_MAC16 and 30 EBR. A logic cell holds one LUT4, "
            "one flip-flop and one carry; nextpnr's packing gives the cell count "
            "(board table).", ""] + ice40_table(args.ice40_sizes, args.keep) + [
            "", "By block (`tinytpu_hdl.synthesis.ice40_blocks`: the same flow with the "
            "hierarchy kept, each block mapped alone by `abc`, so the sums run a few per "
            "cent above the flat counts; the TPU alone, without the board's UART bridge "
            "and clocking):", ""] + ice40_block_table(args.ice40_sizes, args.keep))
    if "boards" in wanted:
        section("boards", [
            "Whole board top levels (TPU, UART bridge, LEDs, reset; pins "
            "constrained), Yosys + nextpnr + the packers from the YoWASP packages, "
            "through `tinytpu_hdl.build.build_board` as `tinytpu build --board B "
            "[--n N]` runs it. Fmax is nextpnr's after routing, against the board's "
            "TPU clock (nextpnr stops optimizing timing once that is met).", ""]
            + board_table(args.keep))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
