"""The command-line tools in hartkit/tools/: their arguments reach the library functions they wrap, and every
console entry point names a tool that exists."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_every_console_script_names_a_main_in_hartkit_tools():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    tools = {name: target for name, target in scripts.items() if name != "hartkit"}
    assert {"hartkit-leaderboard", "hartkit-score-folder"} <= set(tools)
    for name, target in tools.items():
        module, fn = target.split(":")
        assert module.startswith("hartkit.tools."), name
        assert callable(getattr(importlib.import_module(module), fn)), name


def test_score_folder_passes_its_options_to_the_eval_config(monkeypatch, capsys, tmp_path):
    from hartkit.tools import score_folder as tool

    seen = {}

    def fake_score(generated, cfg, device, reference=None, meta=None):
        seen.update(generated=generated, cfg=cfg, device=device, reference=reference, meta=meta)
        return SimpleNamespace(metrics={"fid": 1.5}, intervals={"fid": [1.0, 2.0]}, notes=["n"],
                               failures=[("a.png", "unreadable")], protocol_fields={"resolution": 32})

    monkeypatch.setattr(tool, "score_folder", fake_score)
    tool.main([str(tmp_path / "gen"), "--reference", str(tmp_path / "ref"), "--fd", "fid", "fd_embedded",
               "--clip", "--set", "resolution=32", "batch_size=4"])
    cfg = seen["cfg"]
    assert list(cfg.fd_features) == ["fid", "fd_embedded"] and list(cfg.clip_score) == []
    assert cfg.resolution == 32 and cfg.batch_size == 4
    assert seen["reference"] == str(tmp_path / "ref") and seen["device"] == "cpu" and seen["meta"] is None
    printed = json.loads(capsys.readouterr().out)
    assert printed["metrics"] == {"fid": 1.5} and printed["excluded"] == [["a.png", "unreadable"]]
