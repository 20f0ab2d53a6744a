"""What ran when: the reference model's instruction timeline, summarized and drawn.

The reference model computes every instruction's issue cycle with the control unit's
rules, so its :class:`~tinytpu_hdl.reference.Event` list is the hardware's timeline
(``Accelerator(cfg, timeline=True)``, then ``acc.timeline()``).
"""

from collections import defaultdict

__all__ = ["ENGINE_ROWS", "engine_busy", "save_timeline_plot", "format_timeline"]

#: Rows of the chart, top to bottom.
ENGINE_ROWS = ("control", "loader", "matmul", "vector", "gd")


def engine_busy(events):
    """Cycles each engine is busy (the union of its instructions' issue-to-end spans) and
    the span of the events, ``(busy, first, last)``."""
    spans = defaultdict(list)
    for ev in events:
        spans[ev.engine].append((ev.issue, ev.end))
    busy = {}
    for engine, items in spans.items():
        total, top = 0, None
        for start, end in sorted(items):
            if top is None or start >= top:
                total += end - start
                top = end
            elif end > top:
                total += end - top
                top = end
        busy[engine] = total
    first = min((ev.decode for ev in events), default=0)
    last = max((ev.end for ev in events), default=0)
    return busy, first, last


def format_timeline(events, limit=None):
    """A text table: pc, first cycle, ready, issue, end, stall, engine, instruction."""
    lines = [f"{'run':>3} {'pc':>4} {'first':>7} {'ready':>7} {'issue':>7} {'end':>7} "
             f"{'stall':>5}  {'engine':<7} instruction"]
    for ev in events[:limit]:
        lines.append(f"{ev.run:>3} {ev.pc:>4} {ev.decode:>7} {ev.ready:>7} {ev.issue:>7} "
                     f"{ev.end:>7} {ev.stall:>5}  {ev.engine:<7} {ev.text}")
    return "\n".join(lines)


def save_timeline_plot(events, path, *, title="", first=None, last=None):
    """A per-engine Gantt chart of ``events`` (one run's, or a window ``first .. last`` of
    cycles) as a PNG: each instruction a bar from its issue to its engine's end, a thin
    bar before it for cycles it waited after its checks. Returns False without
    matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    shown = [ev for ev in events
             if (first is None or ev.end > first) and (last is None or ev.decode < last)]
    rows = {name: i for i, name in enumerate(reversed(ENGINE_ROWS))}
    colors = {"control": "#888888", "loader": "#4477aa", "matmul": "#228833",
              "vector": "#ccbb44", "gd": "#ee6677"}
    fig, ax = plt.subplots(figsize=(10, 3.2), dpi=110)
    for ev in shown:
        y = rows[ev.engine]
        ax.broken_barh([(ev.issue, max(ev.end - ev.issue, 1))], (y - 0.35, 0.7),
                       facecolors=colors[ev.engine], edgecolor="white", linewidth=0.3)
        if ev.stall:
            ax.broken_barh([(ev.ready, ev.stall)], (y - 0.08, 0.16), facecolors="#cccccc")
    busy, start, end = engine_busy(shown)
    span = max(1, end - start)
    ax.set_yticks(list(rows.values()))
    ax.set_yticklabels([f"{name} ({100 * busy.get(name, 0) / span:.0f}%)"
                        for name in rows])
    ax.set_xlabel("cycle")
    if first is not None or last is not None:
        ax.set_xlim(first if first is not None else start, last if last is not None else end)
    ax.set_title(title or "instruction timeline (grey: waiting to issue)")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True
