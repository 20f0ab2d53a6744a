"""Argument checks shared by the public entry points: each failure is an exception that
names the parameter, the value and what is allowed."""

import numbers

import numpy as np

__all__ = ["real_array", "raw_array", "positive_int", "real_number", "flag", "int_in_range"]


def _show(value):
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def real_array(name, values, *, ndim=None):
    """``values`` as a float64 array of real numbers (ints, floats, bools); complex numbers,
    strings and objects are refused, as are NaN and infinity."""
    try:
        array = np.asarray(values)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name} must be an array of real numbers: {exc}") from None
    if array.dtype.kind == "c":
        raise TypeError(f"{name} is complex ({array.dtype}); the TPU computes with real numbers "
                        f"(pass values.real if the imaginary part is meant to be dropped)")
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be an array of real numbers, not of {array.dtype} "
                        f"(e.g. {_show(array.flat[0]) if array.size else 'empty'})")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, not of shape {array.shape}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise ValueError(f"{name}: {bad} value(s) are NaN or infinite")
    return array


def raw_array(name, values, fmt, *, ndim=2):
    """``values`` as int64 raw integers of the fixed-point format ``fmt``: integers only,
    within ``[fmt.min_int, fmt.max_int]`` (nothing wraps)."""
    try:
        array = np.asarray(values)
    except (ValueError, TypeError) as exc:
        raise TypeError(f"{name} must be an array of integers: {exc}") from None
    if array.dtype.kind not in "iub":
        raise TypeError(f"{name} must hold raw {fmt} integers, not {array.dtype} values")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-dimensional, not of shape {array.shape}")
    array = array.astype(np.int64)
    if array.size and (array.min() < fmt.min_int or array.max() > fmt.max_int):
        bad = int(np.count_nonzero((array < fmt.min_int) | (array > fmt.max_int)))
        raise ValueError(f"{name}: {bad} value(s) outside the raw {fmt} range "
                         f"[{fmt.min_int}, {fmt.max_int}] (e.g. "
                         f"{int(array[(array < fmt.min_int) | (array > fmt.max_int)][0])})")
    return array


def int_in_range(name, value, lo, hi):
    """An integer (not a bool) with ``lo <= value <= hi``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an integer from {lo} to {hi}, not {_show(value)}")
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer from {lo} to {hi}, not {value}")
    return int(value)


def positive_int(name, value):
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a positive integer, not {_show(value)}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, not {value}")
    return int(value)


def real_number(name, value, *, lo=None, hi=None, lo_open=False):
    """A finite real number (not a bool) within ``[lo, hi]`` (``(lo, hi]`` with
    ``lo_open``)."""
    if not isinstance(value, numbers.Real) or isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a real number, not {_show(value)}")
    value = float(value)
    bad = not np.isfinite(value) or (lo is not None and (value <= lo if lo_open else
                                                          value < lo)) \
        or (hi is not None and value > hi)
    if bad:
        left = "(" if lo_open else "["
        allowed = (f"in {left}{lo:g}, {hi:g}]" if lo is not None and hi is not None else
                   f"{'>' if lo_open else '>='} {lo:g}" if lo is not None else
                   f"<= {hi:g}" if hi is not None else "finite")
        raise ValueError(f"{name} must be a finite number {allowed}, not {value!r}")
    return value


def flag(name, value):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, not {_show(value)}")
    return bool(value)
