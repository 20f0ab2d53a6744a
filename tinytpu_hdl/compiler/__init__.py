"""Compiler: lowers matrix products and MLPs (inference and training) to TPU programs."""

from .memory import CompileError, MemoryPlan
from .gemm import compile_matmul
from .mlp import compile_forward, compile_training

__all__ = ["CompileError", "MemoryPlan", "compile_matmul", "compile_forward", "compile_training"]
