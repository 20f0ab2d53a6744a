#!/usr/bin/env python3
"""Every endpoint that misses a clock period, grouped by where its path starts and ends.

nextpnr names only the single worst path of a clock domain. This script reads the SDF file
that nextpnr writes after routing (``--sdf tpu.sdf``) and runs a static timing analysis
over it: the cells' clock-to-output and combinational delays, the routed interconnect
delays and the setup checks, all taken at their worst (the third value of each triple,
the larger of rise and fall), as nextpnr's own report does. Clock skew is not modelled
(nextpnr's out-of-context runs do not model it either). It prints the Fmax this gives
(check it against nextpnr's), how many endpoints miss ``--period``, those endpoints
grouped by the registers their worst path starts and ends in, and the worst paths in full.

    python scripts/timing_report.py build/tpu.sdf --period 10
"""

import argparse
import re
import sys
from collections import defaultdict
from dataclasses import dataclass, field

__all__ = ["Timing", "parse_sdf", "analyse", "register_name"]

_TRIPLE = r"\((-?[\d.]*):(-?[\d.]*):(-?[\d.]*)\)"
_INTERCONNECT = re.compile(rf"^\s*\(INTERCONNECT\s+(\S+)\s+(\S+)\s+{_TRIPLE}(?:\s+{_TRIPLE})?")
_IOPATH = re.compile(rf"^\s*\(IOPATH\s+(\S+)\s+(\S+)\s+{_TRIPLE}(?:\s+{_TRIPLE})?")
_SETUP = re.compile(rf"^\s*\((SETUPHOLD|SETUP)\s+\((?:posedge|negedge)\s+(\S+?)\)\s+"
                    rf"\((?:posedge|negedge)\s+(\S+?)\)\s+{_TRIPLE}")
_INSTANCE = re.compile(r"^\s*\(INSTANCE\s*(.*?)\)\s*$")
_CELLTYPE = re.compile(r'^\s*\(CELLTYPE\s+"([^"]*)"\)')
_TIMESCALE = re.compile(r"^\s*\(TIMESCALE\s+(\d+)\s*(ps|ns)\)")


def _worst(*groups):
    """The largest number among SDF triples' values (empty ones skipped)."""
    values = [float(v) for v in groups if v not in (None, "")]
    return max(values) if values else 0.0


def _unescape(name):
    return re.sub(r"\\(.)", r"\1", name)


def _split_pin(path):
    """'inst/pin' -> (inst, pin); the divider is the last '/' that is not escaped."""
    for i in range(len(path) - 1, -1, -1):
        if path[i] == "/" and (i == 0 or path[i - 1] != "\\"):
            return _unescape(path[:i]), path[i + 1:]
    raise ValueError(f"no pin in SDF path {path!r}")


def _is_clock(pin):
    return re.fullmatch(r"CLK[A-Z0-9]*", pin) is not None


@dataclass
class Timing:
    """A timing graph: ``edges`` from a pin (``(instance, pin)``) to (pin, delay, kind),
    ``launch`` the clock-to-output delay of each output pin of a clocked cell,
    ``setup`` the setup time of each checked data pin, ``celltype`` per instance. Delays
    in nanoseconds."""
    edges: dict = field(default_factory=lambda: defaultdict(list))
    launch: dict = field(default_factory=dict)
    setup: dict = field(default_factory=dict)
    celltype: dict = field(default_factory=dict)


def parse_sdf(lines):
    """A :class:`Timing` from the lines of an SDF file."""
    timing = Timing()
    scale = 1e-3                      # picoseconds -> nanoseconds (nextpnr writes ps)
    instance = celltype = None
    for line in lines:
        mt = _INTERCONNECT.match(line)
        if mt:
            src, dst = _split_pin(mt.group(1)), _split_pin(mt.group(2))
            timing.edges[src].append((dst, _worst(*mt.groups()[2:]) * scale, "route"))
            continue
        mt = _IOPATH.match(line)
        if mt:
            a, b = mt.group(1), mt.group(2)
            delay = _worst(*mt.groups()[2:]) * scale
            if _is_clock(a):
                key = (instance, b)
                timing.launch[key] = max(delay, timing.launch.get(key, 0.0))
            else:
                timing.edges[(instance, a)].append(((instance, b), delay, "logic"))
            continue
        mt = _SETUP.match(line)
        if mt:
            key = (instance, mt.group(2))
            value = _worst(*mt.groups()[3:6]) * scale
            timing.setup[key] = max(value, timing.setup.get(key, 0.0))
            continue
        mt = _INSTANCE.match(line)
        if mt:
            instance = _unescape(mt.group(1).strip())
            timing.celltype[instance] = celltype
            continue
        mt = _CELLTYPE.match(line)
        if mt:
            celltype = mt.group(1)
            continue
        mt = _TIMESCALE.match(line)
        if mt:
            scale = float(mt.group(1)) * (1e-3 if mt.group(2) == "ps" else 1.0)
            continue
    return timing


def analyse(timing):
    """Latest arrival time at every pin reachable from a launching output, with the
    predecessor on its worst path: {pin: (arrival, predecessor, delay, kind)}."""
    arrival = {pin: (delay, None, delay, "clock-to-out") for pin, delay in timing.launch.items()}
    # Kahn's algorithm over the pins reachable from the launch points.
    indegree = defaultdict(int)
    seen = set(arrival)
    stack = list(arrival)
    while stack:
        pin = stack.pop()
        for dst, _, _ in timing.edges.get(pin, ()):
            indegree[dst] += 1
            if dst not in seen:
                seen.add(dst)
                stack.append(dst)
    ready = [pin for pin in seen if indegree[pin] == 0]
    done = 0
    while ready:
        pin = ready.pop()
        done += 1
        t = arrival[pin][0]
        for dst, delay, kind in timing.edges.get(pin, ()):
            if dst not in arrival or arrival[dst][0] < t + delay:
                arrival[dst] = (t + delay, pin, delay, kind)
            indegree[dst] -= 1
            if indegree[dst] == 0:
                ready.append(dst)
    if done != len(seen):
        raise ValueError(f"combinational loop: {len(seen) - done} pins never became ready")
    return arrival


_CELL_SUFFIX = re.compile(r"(_(TRELLIS_FF|TRELLIS_COMB|LUT4|CCU2C|PFUMX|L6MUX21|DP16KD|"
                          r"MULT18X18D|TRELLIS_RAMW|DPR16X4)|\$CCU2_COMB).*$")


def register_name(instance):
    """The name of the register or block an instance belongs to, without the suffixes
    synthesis adds and without bit and lane numbers: ``vector.act_x_TRELLIS_FF_Q_6`` ->
    ``vector.act_x``; ``array.pe_3_4.mult.mult`` -> ``array.pe_*_*.mult.mult``."""
    name = _CELL_SUFFIX.sub("", instance)
    return re.sub(r"(?<=_)\d+|(?<=\.)\d+(?=\.|$)", "*", name)


def path_to(arrival, pin):
    """The worst path into ``pin``: [(pin, arrival, delay, kind)] from its launch."""
    path = []
    while pin is not None:
        t, prev, delay, kind = arrival[pin]
        path.append((pin, t, delay, kind))
        pin = prev
    return path[::-1]


def _merge_carries(path):
    """``path`` with each run of carry-chain hops (CCU2 cells linked by their zero-delay
    carry routes) shown as one ``carry`` step from the run's first input to its output."""
    merged = []
    for step in path:
        (inst, pin), at, delay, kind = step
        in_chain = "$CCU2_COMB" in inst and pin in ("FCI", "FCO")
        if in_chain and merged and merged[-1][3] in ("carry", "logic") and \
                "$CCU2_COMB" in merged[-1][0][0]:
            (_, _), _, prev_delay, _ = merged[-1]
            merged[-1] = ((inst, pin), at, prev_delay + delay, "carry")
        else:
            merged.append(step)
    return merged


def endpoints(timing, arrival):
    """[(required time without the period, i.e. arrival + setup, pin)] for every checked
    pin that some launching output reaches."""
    return sorted(((arrival[pin][0] + setup, pin) for pin, setup in timing.setup.items()
                   if pin in arrival), reverse=True)


def report(timing, period, paths=3, groups=25, out=sys.stdout):
    arrival = analyse(timing)
    ends = endpoints(timing, arrival)
    if not ends:
        print("no constrained paths", file=out)
        return
    worst = ends[0][0]
    failing = [(t, pin) for t, pin in ends if t > period]
    print(f"worst path {worst:.2f} ns: Fmax {1000 / worst:.1f} MHz; "
          f"{len(failing)} of {len(ends)} endpoints miss {period:g} ns "
          f"({1000 / period:.1f} MHz)", file=out)
    by_group = defaultdict(list)
    for t, pin in failing:
        start = path_to(arrival, pin)[0][0]
        by_group[(register_name(start[0]), register_name(pin[0]))].append(t)
    if by_group:
        print(f"\n{'endpoints':>9} {'worst ns':>9}  from -> to", file=out)
        ranked = sorted(by_group.items(), key=lambda kv: -max(kv[1]))
        for (src, dst), times in ranked[:groups]:
            print(f"{len(times):>9} {max(times):>9.2f}  {src} -> {dst}", file=out)
        if len(ranked) > groups:
            print(f"      ... {len(ranked) - groups} more groups", file=out)
    for t, pin in (failing or ends)[:paths]:
        print(f"\npath to {pin[0]}.{pin[1]} ({t:.2f} ns):", file=out)
        logic = routing = 0.0
        for (inst, p), at, delay, kind in _merge_carries(path_to(arrival, pin)):
            if kind == "route":
                routing += delay
            else:
                logic += delay
            print(f"  {at:6.2f} {delay:5.2f} {kind:<12} {inst}.{p}", file=out)
        print(f"  logic {logic:.2f} ns, routing {routing:.2f} ns, setup "
              f"{timing.setup[pin]:.2f} ns", file=out)


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sdf", help="SDF file written by nextpnr --sdf")
    parser.add_argument("--period", type=float, default=10.0, help="clock period in ns")
    parser.add_argument("--paths", type=int, default=3, help="worst paths shown in full")
    parser.add_argument("--groups", type=int, default=25, help="start/end groups shown")
    args = parser.parse_args()
    with open(args.sdf) as f:
        timing = parse_sdf(f)
    report(timing, args.period, paths=args.paths, groups=args.groups)


if __name__ == "__main__":
    main()
