"""scripts/timing_report.py: static timing analysis over the SDF that nextpnr writes."""

import importlib.util
import io
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def load_script():
    spec = importlib.util.spec_from_file_location("timing_report",
                                                  ROOT / "scripts" / "timing_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cell(celltype, instance, iopaths=(), setups=()):
    lines = ["  (CELL", f'    (CELLTYPE "{celltype}")', f"    (INSTANCE {instance})",
             "    (DELAY", "      (ABSOLUTE"]
    lines += [f"        (IOPATH {a} {b} ({d}:{d}:{d}) ({d // 2}:{d // 2}:{d // 2}))"
              for a, b, d in iopaths]
    lines += ["      )", "    )"]
    if setups:
        lines += ["    (TIMINGCHECK"]
        lines += [f"      (SETUPHOLD (posedge {pin}) (posedge CLK) ({s}:{s}:{s}) (0:0:0))"
                  for pin, s in setups]
        lines += ["    )"]
    return lines + ["  )"]


def sdf(interconnects, cells):
    """An SDF file in nextpnr's layout (picoseconds)."""
    lines = ["(DELAYFILE", '  (SDFVERSION "3.0")', "  (DIVIDER /)", "  (TIMESCALE 1ps)",
             "  (CELL", '    (CELLTYPE "top")', "    (INSTANCE )", "    (DELAY",
             "      (ABSOLUTE"]
    lines += [f"        (INTERCONNECT {a} {b} ({d}:{d}:{d}) ({d}:{d}:{d}))"
              for a, b, d in interconnects]
    lines += ["      )", "    )", "  )"]
    for c in cells:
        lines += c
    return (line + "\n" for line in lines + [")"])


# Two registers and a block RAM; a LUT and a two-cell carry chain between them.
#   ff_a.Q --1000--> lut.A --200--> lut.F --300--> ff_b.DI (setup 100)
#   ram.DOA0 (5000 after CLKA) --500--> lut.B (250 to F)
#   ff_a.Q --200--> ff_c.DI
#   ff_c.Q --100--> add$CCU2_COMB0.A0 --450--> FCO --0--> add$CCU2_COMB1.FCI --400--> F
#     --300--> ff\$x/y.DI (an escaped name with a '/' in it)
CELLS = [
    cell("TRELLIS_FF", "top.ff_a_TRELLIS_FF_Q_3", [("CLK", "Q", 500)], [("DI", 0)]),
    cell("TRELLIS_FF", "top.ff_b_TRELLIS_FF_Q", [("CLK", "Q", 500)], [("DI", 100)]),
    cell("TRELLIS_FF", "top.ff_c_TRELLIS_FF_Q_1", [("CLK", "Q", 500)], [("DI", 0)]),
    cell("TRELLIS_FF", r"top.ff\$x\/y", [("CLK", "Q", 500)], [("DI", 0)]),
    cell("DP16KD", "mem.0.1", [("CLKA", "DOA0", 5000)]),
    cell("TRELLIS_COMB", "top.lut_LUT4_Z", [("A", "F", 200), ("B", "F", 250)]),
    cell("TRELLIS_COMB", r"top.add\$CCU2_COMB0", [("A0", "FCO", 450)]),
    cell("TRELLIS_COMB", r"top.add\$CCU2_COMB1", [("FCI", "F", 400)]),
]
WIRES = [
    ("top.ff_a_TRELLIS_FF_Q_3/Q", "top.lut_LUT4_Z/A", 1000),
    ("top.lut_LUT4_Z/F", "top.ff_b_TRELLIS_FF_Q/DI", 300),
    ("mem.0.1/DOA0", "top.lut_LUT4_Z/B", 500),
    ("top.ff_a_TRELLIS_FF_Q_3/Q", "top.ff_c_TRELLIS_FF_Q_1/DI", 200),
    ("top.ff_c_TRELLIS_FF_Q_1/Q", r"top.add\$CCU2_COMB0/A0", 100),
    (r"top.add\$CCU2_COMB0/FCO", r"top.add\$CCU2_COMB1/FCI", 0),
    (r"top.add\$CCU2_COMB1/F", r"top.ff\$x\/y/DI", 300),
]


def test_worst_arrival_at_every_endpoint():
    tr = load_script()
    timing = tr.parse_sdf(sdf(WIRES, CELLS))
    arrival = tr.analyse(timing)
    ends = {pin: t for t, pin in tr.endpoints(timing, arrival)}
    # ff_b: the block RAM path (5.0 + 0.5 + 0.25 + 0.3) beats the register path
    # (0.5 + 1.0 + 0.2 + 0.3); plus the 0.1 setup.
    assert ends[("top.ff_b_TRELLIS_FF_Q", "DI")] == pytest.approx(6.15)
    assert ends[("top.ff_c_TRELLIS_FF_Q_1", "DI")] == pytest.approx(0.7)
    assert ends[("top.ff$x/y", "DI")] == pytest.approx(0.5 + 0.1 + 0.45 + 0.4 + 0.3)
    assert ("top.ff_a_TRELLIS_FF_Q_3", "DI") not in ends      # nothing drives it
    path = tr.path_to(arrival, ("top.ff_b_TRELLIS_FF_Q", "DI"))
    assert [pin for pin, *_ in path] == [("mem.0.1", "DOA0"), ("top.lut_LUT4_Z", "B"),
                                         ("top.lut_LUT4_Z", "F"),
                                         ("top.ff_b_TRELLIS_FF_Q", "DI")]


def test_report_counts_and_groups_the_failing_endpoints():
    tr = load_script()
    out = io.StringIO()
    tr.report(tr.parse_sdf(sdf(WIRES, CELLS)), period=1.5, paths=1, out=out)
    text = out.getvalue()
    assert text.startswith("worst path 6.15 ns: Fmax 162.6 MHz; 2 of 3 endpoints miss 1.5 ns")
    assert "        1      6.15  mem.*.* -> top.ff_b" in text
    assert "        1      1.75  top.ff_c -> top.ff$x/y" in text
    assert "logic 5.25 ns, routing 0.80 ns, setup 0.10 ns" in text


def test_a_combinational_loop_is_reported():
    tr = load_script()
    cells = CELLS + [cell("TRELLIS_COMB", "loop_a", [("A", "F", 100)]),
                     cell("TRELLIS_COMB", "loop_b", [("A", "F", 100)])]
    wires = WIRES + [("top.ff_a_TRELLIS_FF_Q_3/Q", "loop_a/A", 100), ("loop_a/F", "loop_b/A", 1),
                     ("loop_b/F", "loop_a/A", 1)]
    with pytest.raises(ValueError, match="combinational loop"):
        tr.analyse(tr.parse_sdf(sdf(wires, cells)))


def test_register_names_drop_synthesis_suffixes_and_numbers():
    tr = load_script()
    assert tr.register_name("vector.act_x_TRELLIS_FF_Q_6") == "vector.act_x"
    assert tr.register_name("array.pe_3_4.mult.mult") == "array.pe_*_*.mult.mult"
    assert tr.register_name("acc.mem.0.3") == "acc.mem.*.*"
    assert tr.register_name("control.$signal_TRELLIS_FF_Q") == "control.$signal"
