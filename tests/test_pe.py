# amaranth: UnusedElaboratable=no
"""Processing element: MAC timing (three stages), saturation, double-buffered weight."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from tinytpu_hdl.gateware.pe import ProcessingElement
from tinytpu_hdl.numeric import Q8_8, Q16_16, add_sat


def simulate_pe(steps, product_register=False):
    """``steps``: list of dicts of PE inputs for consecutive cycles. Returns the outputs seen in
    each of those cycles (sampled before the clock edge)."""
    pe = ProcessingElement(Q8_8, Q16_16, product_register=product_register)
    seen = []

    async def tb(ctx):
        for step in steps:
            ctx.set(pe.act_in, {"data": step.get("x", 0), "valid": step.get("valid", 0),
                                "switch": step.get("switch", 0)})
            ctx.set(pe.psum_in, {"value": step.get("psum", 0), "overflow": step.get("ovf", 0)})
            ctx.set(pe.w_north, step.get("w_north", 0))
            ctx.set(pe.shift_south, step.get("shift_south", 0))
            ctx.set(pe.w_west, step.get("w_west", 0))
            ctx.set(pe.shift_east, step.get("shift_east", 0))
            out = ctx.get(pe.psum_out)
            act = ctx.get(pe.act_out)
            seen.append({"psum": out.value, "ovf": out.overflow, "x": act.data,
                         "valid": act.valid, "switch": act.switch, "shadow": ctx.get(pe.w_shadow)})
            await ctx.tick()

    sim = Simulator(pe)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    return seen


@pytest.mark.parametrize("product_register", [False, True])
def test_mac_timing_and_values(product_register):
    """Three stages (four with the product register): the partial sum for an input in
    cycle t arrives in t + 2 (t + 3), the sum leaves in t + 3 (t + 4)."""
    extra = int(product_register)
    assert ProcessingElement.latency_of(product_register) == 3 + extra
    rng = np.random.default_rng(0)
    w = -30000
    xs = rng.integers(-32768, 32768, 20)
    ps = rng.integers(-2**31, 2**31, 20)
    steps = [{"w_north": w, "shift_south": 1}]
    steps += [{"x": int(x), "valid": 1, "switch": int(i == 0)} for i, x in enumerate(xs)]
    steps += [{}, {}, {}, {}]
    for i, p in enumerate(ps):
        steps[3 + extra + i]["psum"] = int(p)
    seen = simulate_pe(steps, product_register)
    want, want_ovf = add_sat(ps, xs * w, Q16_16, return_overflow=True)
    got = [seen[4 + extra + i]["psum"] for i in range(20)]
    assert got == list(want)
    assert [seen[4 + extra + i]["ovf"] for i in range(20)] == [int(o) for o in want_ovf]
    assert want_ovf.any() and not want_ovf.all()
    # act passes east one cycle later, unchanged.
    assert [seen[2 + i]["x"] for i in range(20)] == list(xs)
    assert seen[2]["switch"] == 1 and seen[3]["switch"] == 0


def test_incoming_overflow_flag_is_sticky():
    steps = [{"w_north": 1, "shift_south": 1}, {"x": 1, "valid": 1, "switch": 1},
             {}, {"psum": 5, "ovf": 1}, {}]
    seen = simulate_pe(steps)
    assert seen[4]["psum"] == 6 and seen[4]["ovf"] == 1


def test_shadow_and_active_weights():
    steps = [
        {"w_north": 7, "shift_south": 1},
        {"x": 2, "valid": 1, "switch": 1, "w_north": 9, "shift_south": 1},  # switch takes old 7
        {"x": 3, "valid": 1},                                               # still 7; shadow 9
        {"x": 4, "valid": 1, "w_west": 11, "shift_east": 1},                # shadow 11, uses 7
        {"x": 5, "valid": 1, "switch": 1},                                  # switch: uses 11
        {"x": 6, "valid": 1, "w_north": 13, "shift_south": 1, "w_west": 15, "shift_east": 1},
        {"x": 1, "valid": 1, "switch": 1},                                  # south wins: 13
        {}, {}, {},
    ]
    seen = simulate_pe(steps)
    assert [seen[i]["psum"] for i in range(4, 10)] == [14, 21, 28, 55, 66, 13]
    assert seen[1]["shadow"] == 7 and seen[2]["shadow"] == 9 and seen[4]["shadow"] == 11


def test_invalid_input_does_not_change_sum():
    steps = [{"w_north": 3, "shift_south": 1}, {"x": 2, "valid": 1, "switch": 1},
             {"x": 100, "valid": 0}, {"psum": 10}, {"psum": 99}, {}]
    seen = simulate_pe(steps)
    assert seen[4]["psum"] == 16 and seen[5]["psum"] == 16


def test_rejects_inexact_accumulator():
    from tinytpu_hdl.numeric import FixedFormat
    with pytest.raises(ValueError, match="cannot hold products"):
        ProcessingElement(Q8_8, FixedFormat(32, 8))
