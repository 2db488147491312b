"""The README's code examples run as written."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def test_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README should show the pure-function API"
    shapes = [(2, 128, 1000), (2, 128, 512)]
    assert len(blocks) == len(shapes)
    for block, shape in zip(blocks, shapes):
        namespace = {}
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
        assert namespace["logits"].shape == shape
