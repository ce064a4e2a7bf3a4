"""scripts/spy_summary.py: a function's share is the samples with it anywhere on the stack, counted once per
sample even when it recurses (py-spy's raw format: one stack a line, its sample count last)."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "spy_summary.py"


def test_inclusive_shares_count_each_function_once_a_sample(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("spy_summary", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    raw = tmp_path / "api.txt"
    raw.write_text(
        "run (threading.py:10);_loop (face3d_live/scale/gpu_front.py:250);_wait (face3d_live/scale/gpu_front.py:180) 6\n"
        "run (threading.py:10);walk (a/tree.py:5);walk (a/tree.py:9) 3\n"
        "<module> (default_worker.py:1) 1\n"
    )
    total, counts = module.inclusive_shares(raw)
    assert total == 10
    assert counts["run threading.py"] == 9
    assert counts["_wait gpu_front.py"] == 6
    assert counts["walk tree.py"] == 3  # two frames of one function in one stack: its 3 samples once
    assert counts["<module> default_worker.py"] == 1
