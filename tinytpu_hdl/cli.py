"""Command-line interface: ``tinytpu verilog``, ``demo``, ``build``, ``fuzz`` and ``sweep``."""

import argparse
import os
import sys
import time

import numpy as np

from .config import UNIT_MULTIPLIERS, TPUConfig
from .export import FAMILIES, TOPS
from .numeric import FixedFormat
from .runtime.accelerator import BACKENDS

__all__ = ["main"]


def _config(args):
    data = FixedFormat(args.width, args.frac)
    extra = {k: getattr(args, k) for k in ("ub_depth", "acc_depth", "imem_depth",
                                            "unit_multipliers")
             if getattr(args, k, None) is not None}
    return TPUConfig(n=args.n, data=data, **extra)


def _add_format_args(parser):
    parser.add_argument("--n", type=int, default=2, help="array size N (default 2)")
    parser.add_argument("--width", type=int, default=16, help="data width in bits (default 16)")
    parser.add_argument("--frac", type=int, default=8, help="fraction bits (default 8)")


def _cmd_verilog(args):
    from .export import to_verilog
    cfg = _config(args)
    text = to_verilog(cfg, top=args.top, name=args.name, family=args.family,
                      optimize=args.optimize)
    if args.output == "-":
        sys.stdout.write(text)
    else:
        with open(args.output, "w") as f:
            f.write(text)
        what = "TPU" if args.top == "tpu" else "systolic array"
        print(f"wrote {args.output}: {what} as module {args.name!r}, N={cfg.n}, data {cfg.data}, "
              f"accumulator {cfg.acc}", file=sys.stderr)
    return 0


def _cmd_demo_matmul(args):
    """Stream random tiles back to back through the simulated array and check each result
    against the numpy model of the same arithmetic."""
    from .gateware.array_schedule import Tile, run_array, schedule_tiles
    from .gateware.systolic import SystolicArray
    from .numeric import dot_chain

    cfg = _config(args)
    n = cfg.n
    rng = np.random.default_rng(args.seed)
    rows_per_tile = max(2 * n - 1, args.rows)
    tiles = []
    for i in range(args.tiles):
        s = rng.uniform(-2, 2, (n, n))
        x = rng.uniform(-2, 2, (rows_per_tile, n))
        tiles.append(Tile(cfg.data.encode(s), cfg.data.encode(x), transpose=bool(i % 2)))
    schedule = schedule_tiles(tiles, n, n)
    array = SystolicArray(n, n, fmt=cfg.data, acc=cfg.acc)
    start = time.perf_counter()
    results = run_array(array, schedule)
    elapsed = time.perf_counter() - start
    got = np.array([values for _, values, _ in results], dtype=np.int64)
    print(f"{args.tiles} tiles of {rows_per_tile} rows on a {n}x{n} array "
          f"({cfg.data} data, {cfg.acc} accumulators), weights double-buffered:")
    print(f"{'tile':>4} {'load':>10} {'first row':>9} {'max |error| vs float':>21} {'bit-exact':>9}")
    ok = True
    offset = 0
    for i, tile in enumerate(tiles):
        expect = dot_chain(tile.inputs, tile.stationary, cfg.acc)
        part = got[offset:offset + len(tile.inputs)]
        offset += len(tile.inputs)
        exact = np.array_equal(part, expect)
        ok &= exact
        floats = cfg.data.decode(tile.inputs) @ cfg.data.decode(tile.stationary)
        err = np.max(np.abs(cfg.acc.decode(part) - floats))
        print(f"{i:>4} {'transposed' if tile.transpose else 'normal':>10} "
              f"{tile.first_row_cycle:>9} {err:>21.3g} {'yes' if exact else 'NO':>9}")
    busy = sum(len(t.inputs) for t in tiles)
    span = tiles[-1].first_row_cycle + len(tiles[-1].inputs) - tiles[0].first_row_cycle
    print(f"input rows streamed: {busy} in {span} cycles (idle cycles between tiles: {span - busy}); "
          f"latency {array.latency} cycles; {len(schedule) + array.latency + 1} cycles simulated "
          f"in {elapsed:.2f} s")
    return 0 if ok else 1


def _board_backend(args):
    """(cfg, transport options) for ``--board``/``--port``: the board's TPU configuration,
    and its baud rate on the serial port."""
    if args.board is None:
        if args.backend == "uart":
            raise ValueError("the uart backend needs --board (its TPU configuration and baud "
                             "rate) and --port")
        return None, None
    from .boards import get_board
    board = get_board(args.board)
    if args.n is not None:
        board = board.with_n(args.n)
    if args.backend != "uart":
        return board.cfg, None
    if not args.port:
        raise ValueError("the uart backend needs --port (e.g. /dev/ttyUSB1)")
    return board.cfg, {"port": args.port, "baudrate": board.baud}


def _cmd_demo_xor(args):
    from .demos.xor import run_xor
    cfg, options = _board_backend(args)
    ok, _, _ = run_xor(backend=args.backend, n=2 if args.n is None else args.n,
                       epochs=args.epochs, lr=args.lr,
                       seed=args.seed, plot=args.plot, cfg=cfg, options=options,
                       timeline=args.timeline, waveform=args.waveform)
    return 0 if ok else 1


def _cmd_demo_digits(args):
    from .demos.digits import run_digits
    cfg, options = _board_backend(args)
    run_digits(backend=args.backend, n=8 if args.n is None else args.n, epochs=args.epochs,
               lr=args.lr, batch_size=args.batch, hidden=args.hidden, seed=args.seed,
               plot=args.plot, cfg=cfg, options=options, timeline=args.timeline,
               waveform=args.waveform)
    return 0


def _cmd_build(args):
    from .boards import get_board
    from .build import BuildError, build_board, program_board
    changes = {name: value for name, value in (
        ("n", args.n), ("unit_multipliers", args.unit_multipliers),
        ("ub_depth", args.ub_depth), ("ub_copy_depth", args.ub_copy_depth)) if value is not None}
    board = get_board(args.board).variant(
        clock_hz=None if args.clock_mhz is None else args.clock_mhz * 1e6, seed=args.seed,
        **changes)
    out = args.out or f"build/{board.name}"
    print(f"building {board.name}: {board.cfg.n}x{board.cfg.n} TPU, {board.clock_hz / 1e6:g} MHz, "
          f"UART {board.baud} baud, in {out} (the first run of each YoWASP tool compiles it, "
          f"about a minute)", flush=True)
    try:
        report = build_board(board, build_dir=out)
        print(report.table())
        if args.program:
            tool = program_board(board, report.bitstream)
            print(f"programmed with {tool}")
    except BuildError as exc:
        print(f"tinytpu build: {exc}", file=sys.stderr)
        return 1
    return 0


def _engine_args(p):
    from .distributed import ENGINES
    p.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: a process pool on this machine (default); ray: a Ray "
                        "cluster (pip install 'tinytpu_hdl[ray]')")
    p.add_argument("--address", help="Ray cluster to join (e.g. auto or ray://head:10001); "
                                     "without it Ray starts a local cluster")
    p.add_argument("--workers", type=int,
                   help="local processes (default: every core); for Ray without --address, "
                        "the CPUs of the local cluster")


def _positive(name, value):
    if value is not None and value < 1:
        raise ValueError(f"{name} must be at least 1, not {value}")


def _cmd_fuzz(args):
    from .testing.campaign import FUZZ_CONFIG, replay, run_campaign
    if args.replay:
        ok = all(replay(path) for path in args.replay)
        print("agrees now" if ok else "still mismatches")
        return 0 if ok else 1
    for name in ("cases", "shards", "workers", "n"):
        _positive(f"--{name}", getattr(args, name))
    if args.first < 0:
        raise ValueError(f"--first must be at least 0, not {args.first}")
    shards = args.shards or max(1, min(args.cases, 4 * (args.workers or os.cpu_count() or 1),
                                       -(-args.cases // 2000)))
    config = dict(FUZZ_CONFIG, n=args.n, unit_multipliers=args.unit_multipliers,
                  isolated_multipliers=args.isolated_multipliers == "on")
    if args.ub_copy_depth is not None:
        config["ub_copy_depth"] = args.ub_copy_depth
    TPUConfig(**config)                 # (a bad value is reported before any work starts)
    done = [0]

    def shard_done(i, result):
        done[0] += 1
        print(f"  shard {done[0]}/{shards}: {sum(result['outcomes'].values()):,} programs, "
              f"{len(result['mismatches'])} mismatches", file=sys.stderr, flush=True)
    start = time.perf_counter()
    outcomes, mismatches, _ = run_campaign(
        args.cases, first=args.first, shards=shards, backend=args.backend, config=config,
        engine=args.engine, workers=args.workers, address=args.address, out=args.out,
        on_shard=shard_done)
    elapsed = time.perf_counter() - start
    print(f"{args.cases:,} programs on {args.backend} (seeds {args.first}.."
          f"{args.first + args.cases - 1}, N={args.n}, unit multipliers "
          f"{args.unit_multipliers}, {shards} shards, {args.engine} engine) "
          f"in {elapsed:.1f} s ({args.cases / elapsed * 60:,.0f} per minute), "
          f"{len(mismatches)} mismatches" + (f" (saved in {args.out})" if mismatches else "")
          + "; outcomes: " + ", ".join(f"{k} {v:,}" for k, v in sorted(outcomes.items())))
    return 1 if mismatches else 0


def _cmd_sweep(args):
    from pathlib import Path
    from .sweep import grid, plot, run_sweep, to_csv, to_markdown
    formats = []
    for text in args.format:
        try:
            width, frac = (int(v) for v in text.split("."))
        except ValueError:
            raise ValueError(f"--format takes WIDTH.FRAC (e.g. 16.8), not {text!r}") from None
        formats.append((width, frac))
    points = [p for width, frac in formats for p in grid(
        n=args.n, width=[width], frac=[frac], ub_depth=args.ub_depth or [None],
        acc_depth=args.acc_depth or [None], imem_depth=args.imem_depth or [None],
        device=args.device, unit_multipliers=args.unit_multipliers)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{len(points)} design points x {len(args.metrics)} metrics on the {args.engine} "
          f"engine; results in {out}", file=sys.stderr, flush=True)

    def progress(point, metric, result):
        what = result.get("error") or ", ".join(f"{k} {v}" for k, v in result.items())
        print(f"  {point.label()}: {metric}: {what}", file=sys.stderr, flush=True)
    rows = run_sweep(points, args.metrics, gemm_size=args.gemm_size, engine=args.engine,
                     workers=args.workers, address=args.address,
                     cache=False if args.no_cache else True, keep=args.keep,
                     on_result=progress)
    to_csv(rows, out / "sweep.csv")
    table = to_markdown(rows)
    (out / "sweep.md").write_text(table)
    plotted = plot(rows, out / "sweep.png")
    print(table)
    print(f"wrote {out / 'sweep.csv'}, {out / 'sweep.md'}"
          + (f", {out / 'sweep.png'}" if plotted else ""), file=sys.stderr)
    return 0


def main(argv=None):
    from . import __version__
    parser = argparse.ArgumentParser(prog="tinytpu", description=__doc__)
    parser.add_argument("--version", action="version", version=f"tinytpu_hdl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("verilog", help="write synthesizable Verilog of the top level")
    _add_format_args(p)
    p.add_argument("-o", "--output", default="-", help="output file ('-' for stdout)")
    p.add_argument("--name", default="tinytpu", help="top module name")
    p.add_argument("--top", choices=TOPS, default="tpu",
                   help="what to emit: the whole TPU (default) or the bare array")
    p.add_argument("--family", choices=FAMILIES,
                   help="use this FPGA family's primitives (ecp5: MULT18X18D blocks with "
                        "their registers; default: generic Verilog)")
    p.add_argument("--ub-depth", type=int, help="unified buffer rows (default 4096)")
    p.add_argument("--acc-depth", type=int, help="accumulator rows (default 512)")
    p.add_argument("--imem-depth", type=int, help="instruction memory words (default 256)")
    p.add_argument("--unit-multipliers", choices=UNIT_MULTIPLIERS,
                   help="where the vector and gradient-descent units multiply: blocks "
                        "(default; MULT18X18D with --family ecp5), logic (adders, leaving "
                        "every multiplier block to the array) or shared (one block per lane "
                        "for both units; passes read a row every 1 to 3 cycles)")
    p.add_argument("--optimize", action="store_true",
                   help="fold and narrow the logic for fast cycle-based simulation "
                        "(Verilator): the same circuit in fewer signals, most internal names "
                        "dropped")
    p.set_defaults(func=_cmd_verilog)

    p = sub.add_parser("demo", help="run a demonstration on the simulated hardware")
    demos = p.add_subparsers(dest="demo", required=True)
    d = demos.add_parser("matmul", help="stream random tiles through the systolic array")
    _add_format_args(d)
    d.add_argument("--tiles", type=int, default=3, help="number of weight tiles (default 3)")
    d.add_argument("--rows", type=int, default=8, help="input rows per tile (default 8)")
    d.add_argument("--seed", type=int, default=0, help="random seed of the tiles (default 0)")
    d.set_defaults(func=_cmd_demo_matmul)
    d = demos.add_parser("xor", help="train the 2-2-1 XOR network on the device")
    d.add_argument("--backend", default="reference", choices=BACKENDS,
                   help="where the TPU runs: reference model (default), Amaranth simulation, "
                        "Verilator, Icarus Verilog, serial-sim (the UART bridge simulated) or "
                        "uart (a board on --port)")
    d.add_argument("--n", type=int, help="array size N (default 2, or the board's)")
    d.add_argument("--board", help="the board's configuration (with --backend uart: the board "
                                   "on --port)")
    d.add_argument("--port", help="serial port of the board (uart backend)")
    d.add_argument("--epochs", type=int, default=300, help="training epochs (default 300)")
    d.add_argument("--lr", type=float, default=0.5, help="learning rate (default 0.5)")
    d.add_argument("--seed", type=int, default=13,
                   help="seed of the initial weights (default 13)")
    d.add_argument("--plot", default="xor_loss.png", help="loss-curve PNG ('' for none)")
    d.add_argument("--timeline", help="PNG of one training step's per-engine timeline (from "
                                      "the reference model, cycle-exact)")
    d.add_argument("--waveform", help="VCD of the whole simulation, and a GTKWave .gtkw "
                                      "beside it (pysim and verilator backends)")
    d.set_defaults(func=_cmd_demo_xor)
    d = demos.add_parser("digits", help="train an MLP on the 8x8 digits on the device")
    d.add_argument("--backend", default="reference", choices=BACKENDS,
                   help="where the TPU runs: reference model (default), Amaranth simulation, "
                        "Verilator, Icarus Verilog, serial-sim (the UART bridge simulated) or "
                        "uart (a board on --port)")
    d.add_argument("--n", type=int, help="array size N (default 8, or the board's)")
    d.add_argument("--board", help="the board's configuration (with --backend uart: the board "
                                   "on --port)")
    d.add_argument("--port", help="serial port of the board (uart backend)")
    d.add_argument("--epochs", type=int, default=10, help="training epochs (default 10)")
    d.add_argument("--lr", type=float, default=0.5, help="learning rate (default 0.5)")
    d.add_argument("--batch", type=int,
                   help="batch size (default 32, or the largest that fits the configuration)")
    d.add_argument("--hidden", type=int,
                   help="hidden units (default 32, or the most that fit the configuration)")
    d.add_argument("--seed", type=int, default=0,
                   help="seed of the initial weights and the data split (default 0)")
    d.add_argument("--plot", default="digits_loss.png", help="loss-curve PNG ('' for none)")
    d.add_argument("--timeline", help="PNG of one training step's per-engine timeline (from "
                                      "the reference model, cycle-exact)")
    d.add_argument("--waveform", help="VCD of the whole simulation, and a GTKWave .gtkw "
                                      "beside it (pysim and verilator backends)")
    d.set_defaults(func=_cmd_demo_digits)

    from .boards import board_names
    p = sub.add_parser("build", help="build (and load) a bitstream for a board with the "
                                     "YoWASP tools")
    p.add_argument("--board", required=True, choices=board_names(), help="the board")
    p.add_argument("--n", type=int, help="array size (default: the board's)")
    p.add_argument("--clock-mhz", type=float,
                   help="TPU clock from the board's PLL (default: the board's; the build "
                        "fails when the routed design does not meet it)")
    p.add_argument("--unit-multipliers", choices=UNIT_MULTIPLIERS,
                   help="where the vector and gradient-descent units multiply (default: the "
                        "board's; shared: one multiplier block per lane for both, what lets "
                        "a 12x12 fit the ECP5-85F)")
    p.add_argument("--ub-depth", type=int, help="unified buffer rows (default: the board's)")
    p.add_argument("--ub-copy-depth", type=int,
                   help="rows of the buffer's second copy (overlap_units; default: the "
                        "board's)")
    p.add_argument("--seed", type=int, help="nextpnr placement seed (default: nextpnr's)")
    p.add_argument("--out", help="build folder (default build/<board>)")
    p.add_argument("--program", action="store_true",
                   help="load the bitstream with openFPGALoader or iceprog")
    p.set_defaults(func=_cmd_build)

    p = sub.add_parser("fuzz", help="differential fuzzing: random programs on the gateware "
                                    "and the reference model, sharded over workers")
    p.add_argument("--cases", type=int, default=1000, help="programs to run (default 1000)")
    p.add_argument("--first", type=int, default=0, help="seed of the first program (default 0)")
    p.add_argument("--backend", choices=("verilator", "pysim"), default="verilator",
                   help="the gateware simulator (default verilator)")
    p.add_argument("--n", type=int, default=2, help="array size (default 2)")
    p.add_argument("--unit-multipliers", choices=UNIT_MULTIPLIERS, default="blocks",
                   help="TPUConfig.unit_multipliers of the fuzzed TPU (default blocks)")
    p.add_argument("--isolated-multipliers", choices=("on", "off"), default="on",
                   help="TPUConfig.isolated_multipliers (default on)")
    p.add_argument("--ub-copy-depth", type=int,
                   help="TPUConfig.ub_copy_depth: rows of the buffer's second copy (default: "
                        "all 32)")
    p.add_argument("--shards", type=int,
                   help="tasks the seeds are split into (default: about 2,000 programs each, "
                        "at most 4 per worker)")
    p.add_argument("--out", default="fuzz_mismatches",
                   help="folder for mismatching cases (JSON; default fuzz_mismatches)")
    p.add_argument("--replay", nargs="+", metavar="FILE",
                   help="run saved mismatching cases again instead")
    _engine_args(p)
    p.set_defaults(func=_cmd_fuzz)

    from .sweep import DEVICES, METRICS
    p = sub.add_parser("sweep", help="measure design points (array size, format, memories, "
                                     "device) x metrics, as cached parallel tasks")
    p.add_argument("--n", type=int, nargs="+", required=True, help="array sizes")
    p.add_argument("--format", nargs="+", default=["16.8"],
                   help="data formats as WIDTH.FRAC (default 16.8, i.e. Q8.8)")
    p.add_argument("--ub-depth", type=int, nargs="+", help="unified buffer rows (default: "
                                                            "the configuration's)")
    p.add_argument("--acc-depth", type=int, nargs="+", help="accumulator rows")
    p.add_argument("--imem-depth", type=int, nargs="+", help="instruction memory words")
    p.add_argument("--device", nargs="+", choices=DEVICES, default=["ecp5-85f"],
                   help="ecp5-85f (out of context on the LFE5U-85F, default) and/or "
                        "ice40-up5k (the iCEBreaker's configuration and board build)")
    p.add_argument("--unit-multipliers", nargs="+", choices=UNIT_MULTIPLIERS,
                   default=["blocks"], help="where the vector and gradient-descent units "
                   "multiply: multiplier blocks (default), logic and/or shared blocks "
                   "(TPUConfig.unit_multipliers)")
    p.add_argument("--metrics", nargs="+", choices=METRICS, default=["resources", "gemm"],
                   help="resources (synthesis), fmax (place and route: slow), gemm, training "
                        "(cycles on the reference model); default resources gemm")
    p.add_argument("--gemm-size", type=int, default=256,
                   help="the gemm metric's S x S @ S x S (default 256)")
    p.add_argument("--out", default="sweep", help="folder for sweep.csv, sweep.md and "
                                                   "sweep.png (default sweep)")
    p.add_argument("--keep", help="keep synthesis files in this folder")
    p.add_argument("--no-cache", action="store_true",
                   help="measure again even what the cache holds")
    _engine_args(p)
    p.set_defaults(func=_cmd_sweep)

    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, TypeError) as exc:
        parser.error(str(exc))
    except RuntimeError as exc:               # a missing tool or package, a device error
        print(f"tinytpu: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tinytpu: interrupted (the device was stopped)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
