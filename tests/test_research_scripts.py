"""The research scripts that turn committed records into the tables of results/ (so no number there is typed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from hartkit.records import Protocol, ResultRecord, write_record

REPO = Path(__file__).resolve().parents[1]


def _gen_record(folder: Path, dataset: str, checkpoint: str, seed: int, position: float, role: str = "model"):
    proto = Protocol(task="generation", dataset=dataset, split="test", num_images=500, resolution=64)
    rec = ResultRecord(stage="gen_eval", label="discrete+tiny", protocol=proto, role=role,
                       metrics={"prompt_accuracy/main_position": position},
                       intervals={"prompt_accuracy/main_position": [position - 0.03, position + 0.03]},
                       config={"seed": seed, "tokenizer": {"checkpoint": f"artifacts/tokenizer/{checkpoint}"}})
    write_record(folder, rec)


def test_record_rows_filters_sorts_by_seed_and_gives_the_spread(tmp_path):
    grad = "synthscenes[backgrounds=gradient]"
    _gen_record(tmp_path / "a", grad, "discrete-aaa", 1, 0.10)
    _gen_record(tmp_path / "b", grad, "discrete-aaa", 0, 0.30)
    _gen_record(tmp_path / "b", grad, "discrete-bbb", 0, 0.90)  # another tokenizer: filtered out
    _gen_record(tmp_path / "b", "synthscenes", "discrete-aaa", 2, 0.90)  # another protocol: filtered out
    _gen_record(tmp_path / "b", grad, "discrete-aaa", 3, 0.90, role="floor")  # not a model row
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts/research/record_rows.py"), str(tmp_path / "a"), str(tmp_path / "b"),
         "--dataset", grad, "--checkpoint", "discrete-aaa", "--metrics", "prompt_accuracy/main_position"],
        capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[2] == "| discrete+tiny | discrete-aaa | 0 | 0.300 [0.270, 0.330] |"
    assert out[3] == "| discrete+tiny | discrete-aaa | 1 | 0.100 [0.070, 0.130] |"
    # mean and sample standard deviation of 0.30 and 0.10
    assert out[4] == "| mean ± std over 2 runs | | | 0.200 ± 0.141 |"
    assert len(out) == 5
