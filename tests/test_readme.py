"""The README's commands and code examples run as written."""

import pathlib
import re
import shlex
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def _blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def test_python_examples_run(tmp_path, monkeypatch):
    """The shell commands run first (in a fresh folder), then each Python block there."""
    monkeypatch.chdir(tmp_path)
    for name in ("train.py", "eval.py", "configs"):
        (tmp_path / name).symlink_to(ROOT / name)
    commands = [line for block in _blocks("sh") for line in block.splitlines()
                if line.startswith("python ")]
    assert commands, "the README should show how to prepare data"
    for command in commands:
        argv = [sys.executable, *shlex.split(command)[1:]]
        result = subprocess.run(argv, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "runs" / "tiny" / "checkpoints").is_dir()
    assert (tmp_path / "runs" / "tiny" / "eval" / "test_standard_decay.json").exists()
    assert len(list((tmp_path / "runs" / "compare" / "compare").glob("*.png"))) == 3
    blocks = _blocks("python")
    checks = [("logits", (2, 128, 1000)), ("logits", (2, 128, 512)), ("batch", None)]
    assert len(blocks) == len(checks)
    for block, (name, shape) in zip(blocks, checks):
        namespace = {}
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102
        if name == "logits":
            assert namespace["logits"].shape == shape
        else:
            assert namespace["batch"]["inputs"].shape == (8, 128)
            assert namespace["state"] and namespace["data"].tokenizer.vocab_size == 8000
