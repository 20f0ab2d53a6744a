"""Waveforms of the simulators: which signals, grouped by block, and GTKWave save files.

``Accelerator(cfg, backend="pysim" | "verilator", waveform="run.vcd")`` writes the trace
(complete once the accelerator is closed) and ``run.gtkw`` beside it, which opens the trace
in GTKWave with these groups: host stream, control (state, pc, the commands it issues),
array edges, vector unit, gradient unit, memory ports.
"""

from pathlib import Path

__all__ = ["GROUPS", "gtkw_path", "waveform_groups", "write_gtkw_for_vcd"]

#: Group name -> (block, member names) of the signals a waveform shows first.
GROUPS = {
    "host stream": ("tpu", ("host_cmd", "host_resp", "running", "done", "error")),
    "control": ("control", ("state", "pc", "running", "imem", "load_cmd", "matmul_cmd",
                            "vpu_cmd", "gd_cmd")),
    "array edges": ("array", ("weights", "act", "result")),
    "vector unit": ("vector", ("cmd", "busy", "acc_rd", "ub_aux", "ub_bias", "ub_wr")),
    "gradient unit": ("gd", ("cmd", "busy", "acc_rd", "ub_rd", "ub_wr")),
    "memory ports": (None, ("ub.r0", "ub.r1", "ub.w", "acc.r0", "acc.w")),
}


def gtkw_path(vcd):
    return str(Path(vcd).with_suffix(".gtkw"))


def waveform_groups(tpu):
    """The traces of an elaborated :class:`~tinytpu_hdl.gateware.tpu.TPU` for Amaranth's
    ``write_vcd`` (a dict: group name -> interfaces and signals)."""
    blocks = dict(tpu.blocks, tpu=tpu)
    groups = {}
    for name, (block, members) in GROUPS.items():
        items = []
        for member in members:
            if block is None:
                owner, attr = member.split(".")
                items.append(getattr(blocks[owner], attr))
            else:
                items.append(getattr(blocks[block], member))
        groups[name] = items
    return groups


def _vcd_names(path):
    """Full names (``scope.scope.name``) and widths of the variables a VCD declares."""
    names, scope = [], []
    with open(path) as f:
        for line in f:
            words = line.split()
            if not words:
                continue
            if words[0] == "$enddefinitions":
                break
            if words[0] == "$scope":
                scope.append(words[2])
            elif words[0] == "$upscope":
                scope.pop()
            elif words[0] == "$var":
                names.append((".".join(scope + [words[4]]), int(words[2])))
    return names


def write_gtkw_for_vcd(vcd_path, gtkw=None):
    """A GTKWave save file for a VCD written by Verilator from the exported Verilog: the
    signals of :data:`GROUPS` found in it (by block scope and port-name prefix), grouped."""
    from vcd.gtkw import GTKWSave
    gtkw = gtkw or gtkw_path(vcd_path)
    names = _vcd_names(vcd_path)
    scopes = {"tpu": "tinytpu", "control": "control", "array": "array", "vector": "vector",
              "gd": "gd", "ub": "ub", "acc": "acc"}
    with open(gtkw, "w") as f:
        save = GTKWSave(f)
        save.dumpfile(str(vcd_path))
        for group, (block, members) in GROUPS.items():
            wanted = []
            for member in members:
                owner, attr = (member.split(".") if block is None else (block, member))
                prefix = attr.replace(".", "__")
                for full, width in names:
                    parts = full.split(".")
                    if len(parts) < 2 or parts[-2] != scopes[owner]:
                        continue
                    if parts[-1] == prefix or parts[-1].startswith(prefix + "__"):
                        wanted.append(full + (f"[{width - 1}:0]" if width > 1 else ""))
            if wanted:
                with save.group(group, closed=False):
                    for name in wanted:
                        save.trace(name)
    return gtkw
