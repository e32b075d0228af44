"""Leaderboard: one table per protocol, newest run per (label, config) wins, malformed records skipped by name."""

from __future__ import annotations

import csv
import json

from hartkit.eval.leaderboard import build_leaderboard, main
from hartkit.records import Protocol, ResultRecord, write_record


def _recon(label, n, metrics, created, config=None, run_id=None):
    proto = Protocol(task="reconstruction", dataset="synthscenes", split="test", num_images=n, resolution=64,
                     feature_extractor="rfd_embedded=hartkit embedded-clip", extractor_hash="ab" * 32)
    rec = ResultRecord(stage="recon_eval", label=label, protocol=proto, metrics=metrics,
                       config=config or {"tokenizer": {"name": label}}, model={"parameters": 450_000},
                       created=created)
    if run_id:
        rec.run_id = run_id
    return rec


def _gen(label, metrics, model):
    proto = Protocol(task="generation", dataset="synthscenes", split="test", num_images=500, resolution=64,
                     feature_extractor="fd_embedded=hartkit embedded-clip", extractor_hash="ab" * 32)
    return ResultRecord(stage="gen_eval", label=label, protocol=proto, metrics=metrics, model=model,
                        created="2026-01-01T00:00:00+00:00")


def _setup(tmp_path):
    write_record(tmp_path, _recon("hybrid", 500, {"psnr": 24.0, "ssim": 0.8, "rfd_embedded": 0.5},
                                  "2026-01-01T00:00:00+00:00", run_id="old"))
    write_record(tmp_path, _recon("hybrid", 500, {"psnr": 25.0, "ssim": 0.82, "rfd_embedded": 0.4},
                                  "2026-01-02T00:00:00+00:00", run_id="new"))
    write_record(tmp_path, _recon("discrete", 500, {"psnr": 21.0, "ssim": 0.7, "rfd_embedded": 0.9,
                                                    "codebook_usage": 0.8}, "2026-01-01T00:00:00+00:00"))
    write_record(tmp_path, _recon("discrete", 100, {"psnr": 99.0, "ssim": 0.1, "rfd_embedded": 7.0},
                                  "2026-01-01T00:00:00+00:00"))  # another protocol (100 images)
    write_record(tmp_path, _gen("hybrid+tiny", {"fd_embedded": 3.0, "fd_embedded/star": 4.0,
                                                "clip_score_embedded": 30.0, "prompt_accuracy": 0.5},
                                {"parameters": 5_000_000, "throughput_img_s": 10.0, "steps": 6}))
    write_record(tmp_path, _gen("discrete+tiny", {"fd_embedded": 5.0, "clip_score_embedded": 28.0},
                                {"parameters": 5_000_000, "throughput_img_s": 12.0, "steps": 6}))
    bad = tmp_path / "records" / "recon_eval"
    (bad / "broken.json").write_text("{not json")
    (bad / "missing_fields.json").write_text(json.dumps({"stage": "recon_eval"}))


def test_tables_per_protocol_newest_wins_and_bad_records_reported(tmp_path):
    _setup(tmp_path)
    out = build_leaderboard(tmp_path)
    md = (tmp_path / "leaderboard.md").read_text()
    assert out["records"] == 6
    assert sorted(p.name for p, _ in out["skipped"]) == ["broken.json", "missing_fields.json"]
    assert "broken.json" in md and "missing_fields.json" in md
    sections = [s for s in md.split("### ")[1:]]
    assert len(sections) == 3  # two reconstruction protocols (n500, n100) + one generation protocol
    n500 = next(s for s in sections if "n500" in s and "reconstruction" in s)
    n100 = next(s for s in sections if "n100" in s)
    assert "99" not in n500 and "99" in n100  # numbers of different protocols never share a table
    rows = [line for line in n500.splitlines() if line.startswith("| hybrid") or line.startswith("| discrete")]
    assert rows[0].startswith("| hybrid") and "| 25 |" in rows[0]  # sorted by rfd_embedded; newest hybrid run
    assert "| 24 |" not in n500  # the older hybrid run is not shown
    header = n500.splitlines()[2]
    assert header.index("rfd_embedded") < header.index("psnr") < header.index("ssim")
    gen = next(s for s in sections if "generation" in s)
    assert "fd_embedded/star" not in gen  # per-category numbers stay in the CSV
    assert "prompt_accuracy" in gen and "throughput_img_s" in gen


def test_csv_keeps_every_run_with_latest_flag(tmp_path):
    _setup(tmp_path)
    build_leaderboard(tmp_path, plots=False)
    with open(tmp_path / "leaderboard.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6
    hybrid = {r["run_id"]: r["latest"] for r in rows if r["label"] == "hybrid"}
    assert hybrid == {"new": "True", "old": "False"}
    assert any(r.get("fd_embedded/star") == "4.0" for r in rows)


def test_plots_are_written(tmp_path):
    _setup(tmp_path)
    out = build_leaderboard(tmp_path)
    names = sorted(p.name for p in out["plots"])
    assert any(n.startswith("tokenizers-") for n in names)
    assert any(n.startswith("quality_vs_throughput-") for n in names)
    for p in out["plots"]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{p.name}" in (tmp_path / "leaderboard.md").read_text()


def test_cli_and_empty_results(tmp_path, capsys):
    main(["--results", str(tmp_path), "--no-plots"])
    assert "0 records" in capsys.readouterr().out
    assert "No records yet" in (tmp_path / "leaderboard.md").read_text()
    _setup(tmp_path)
    main(["--results", str(tmp_path), "--no-plots"])
    printed = capsys.readouterr().out
    assert "6 records, 2 skipped" in printed and "broken.json" in printed


def test_leaderboard_stage(tmp_path):
    from types import SimpleNamespace

    from hartkit.stages.leaderboard import run

    _setup(tmp_path)
    run(SimpleNamespace(results_dir=tmp_path))
    assert (tmp_path / "leaderboard.md").exists() and (tmp_path / "leaderboard.csv").exists()
