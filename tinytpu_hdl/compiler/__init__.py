"""Compiler: lowers matrix products and MLPs (inference and training) to plans (programs,
host transfers, memory map) of any size."""

from .memory import CompileError, MemoryPlan
from .plan import Plan
from .gemm import compile_matmul
from .mlp import compile_forward, compile_training
from .capacity import Capacity, TrainingFit

__all__ = ["CompileError", "MemoryPlan", "Plan", "compile_matmul", "compile_forward",
           "compile_training", "Capacity", "TrainingFit"]
