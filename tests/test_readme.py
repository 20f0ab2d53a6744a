"""README's examples run as written."""

import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parent.parent / "README.md"


def test_python_example_runs_as_written():
    """The Python example: a 256x256 matmul and a 784-64-10 network on TPUConfig(n=8) with
    its default memories, training with streamed samples, a raw program."""
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    assert "TPUConfig(n=8)" in code and "256, 256" in code and "784, 64, 10" in code
    np.random.seed(0)
    scope = {}
    exec(compile(code, str(README), "exec"), scope)
    a, b, c = scope["a"], scope["b"], scope["c"]
    fmt = scope["acc"].cfg.data
    assert np.array_equal(c, fmt.decode(fmt.encode(a)) @ fmt.decode(fmt.encode(b)))
    assert scope["y"].shape == (1000, 10)
    assert len(scope["losses"]) == 3 and scope["losses"][-1] < scope["losses"][0]
