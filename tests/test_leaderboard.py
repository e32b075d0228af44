"""Leaderboard: one table per protocol, baselines as rows, intervals, significance, seeds, flags, plots."""

from __future__ import annotations

import csv
import json

import pytest

from hartkit.eval.leaderboard import build_leaderboard, significant_pairs
from hartkit.records import Protocol, ResultRecord, write_record
from hartkit.tools.leaderboard import main


def _recon(label, n, metrics, created, config=None, run_id=None, intervals=None, role="model", seed=0, **kw):
    proto = Protocol(task="reconstruction", dataset="synthscenes", split="test", num_images=n, resolution=64,
                     feature_extractor="rfd_embedded=hartkit embedded-clip", extractor_hash="ab" * 32)
    config = dict(config or {"tokenizer": {"name": label}})
    config["seed"] = seed
    rec = ResultRecord(stage="recon_eval", label=label, protocol=proto, metrics=metrics, config=config,
                       model={"parameters": 450_000}, created=created, intervals=intervals or {}, role=role, **kw)
    if run_id:
        rec.run_id = run_id
    return rec


def _gen(label, metrics, model, intervals=None, role="model"):
    proto = Protocol(task="generation", dataset="synthscenes", split="test", num_images=500, resolution=64,
                     feature_extractor="fd_embedded=hartkit embedded-clip", extractor_hash="ab" * 32)
    return ResultRecord(stage="gen_eval", label=label, protocol=proto, metrics=metrics, model=model,
                        created="2026-01-01T00:00:00+00:00", intervals=intervals or {}, role=role,
                        config={"label": label})


def _setup(tmp_path):
    noise = {"rfd_embedded": 0.05, "num_images": 500, "sets": "test images [500, 1000)"}
    write_record(tmp_path, _recon("hybrid", 500, {"psnr": 24.0, "ssim": 0.8, "rfd_embedded": 0.5},
                                  "2026-01-01T00:00:00+00:00", run_id="old"))
    write_record(tmp_path, _recon("hybrid", 500, {"psnr": 25.0, "ssim": 0.82, "rfd_embedded": 0.4, "psnr_discrete": 23.0},
                                  "2026-01-02T00:00:00+00:00", run_id="new",
                                  intervals={"psnr": [24.8, 25.2], "rfd_embedded": [0.35, 0.45],
                                             "psnr_discrete": [22.7, 23.3]},
                                  noise_floor=noise, trained_commit="abc1234"))
    write_record(tmp_path, _recon("discrete", 500, {"psnr": 21.0, "ssim": 0.7, "rfd_embedded": 0.9,
                                                    "codebook_usage": 0.8}, "2026-01-01T00:00:00+00:00",
                                  intervals={"psnr": [20.5, 21.5], "rfd_embedded": [0.3, 1.5]}))
    write_record(tmp_path, _recon("baseline: mean colour", 500, {"psnr": 15.7, "ssim": 0.3, "rfd_embedded": 1.0},
                                  "2026-01-01T00:00:00+00:00", role="floor", config={"data": "x"},
                                  intervals={"psnr": [15.5, 15.9], "rfd_embedded": [0.95, 1.05]}))
    write_record(tmp_path, _recon("ceiling: other real images", 500, {"rfd_embedded": 0.05},
                                  "2026-01-01T00:00:00+00:00", role="ceiling", config={"data": "x"}))
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


def _section(md, needle):
    return next(s for s in md.split("### ")[1:] if needle in s.split("\n")[0])


def test_tables_per_protocol_with_baselines_intervals_and_marks(tmp_path):
    _setup(tmp_path)
    out = build_leaderboard(tmp_path)
    md = (tmp_path / "leaderboard.md").read_text()
    assert out["records"] == 8
    assert sorted(p.name for p, _ in out["skipped"]) == ["broken.json", "missing_fields.json"]
    assert "broken.json" in md and "missing_fields.json" in md
    sections = md.split("### ")[1:]
    assert len(sections) == 3  # two reconstruction protocols (n500, n100) + one generation protocol
    n500, n100 = _section(md, "n=500, 64 px: reconstruction"), _section(md, "n=100")
    assert "99" not in n500 and "99" in n100  # numbers of different protocols never share a table
    rows = [line for line in n500.splitlines() if line.startswith("| ") and not line.startswith("| row")]
    labels = [r.split(" | ")[0].removeprefix("| ") for r in rows]
    # ceiling first, trained rows and the hybrid's discrete-only decode by rFD, the floor last
    assert labels[0].startswith("ceiling: other real images *(ceiling)*")
    assert labels[-1] == "baseline: mean colour *(floor)*"
    assert labels[1:4] == ["hybrid", "discrete", "hybrid (discrete only)"]
    assert "25 [24.8, 25.2]" in rows[1] and "| 24 |" not in n500  # newest hybrid run, with its interval
    header = n500.splitlines()[2]
    assert header.index("rfd_embedded") < header.index("psnr") < header.index("ssim")
    assert "Protocol: `reconstruction | synthscenes" in n500  # the long text below the table
    assert "Noise floor (real vs real, test images [500, 1000), n=500): rfd_embedded 0.05" in n500
    # psnr intervals of hybrid and discrete separate; rfd intervals overlap
    assert "`psnr`: hybrid > discrete" in n500
    assert "hybrid > discrete" not in n500.split("`rfd_embedded`:")[1].split("\n")[0]
    assert "hybrid: trained at abc1234" in n500 and "discrete: trained at unknown commit" in n500
    assert "Grids:" not in n500  # no grid written for these rows
    gen = _section(md, "generation")
    assert "fd_embedded/star" not in gen  # per-category numbers stay in the CSV
    assert "prompt_accuracy" in gen and "throughput_img_s" in gen


def test_trained_row_below_its_floor_is_flagged(tmp_path):
    _setup(tmp_path)
    build_leaderboard(tmp_path, plots=False)
    n500 = _section((tmp_path / "leaderboard.md").read_text(), "n=500, 64 px: reconstruction")
    line = lambda label: next(r for r in n500.splitlines() if r.startswith(f"| {label} |"))  # noqa: E731
    assert "below floor" not in line("hybrid")
    write_record(tmp_path, _recon("bad", 500, {"psnr": 15.0, "ssim": 0.9, "rfd_embedded": 0.2},
                                  "2026-01-03T00:00:00+00:00"))
    build_leaderboard(tmp_path, plots=False)
    n500 = _section((tmp_path / "leaderboard.md").read_text(), "n=500, 64 px: reconstruction")
    assert line("bad").endswith("⚠ below floor: psnr |")  # worse PSNR than the mean colour; rFD and SSIM fine
    # worse than the floor but inside its interval: said, without the warning sign
    write_record(tmp_path, _recon("close", 500, {"psnr": 15.6, "ssim": 0.9, "rfd_embedded": 0.2},
                                  "2026-01-03T00:00:00+00:00", intervals={"psnr": [15.3, 15.8]}))
    build_leaderboard(tmp_path, plots=False)
    n500 = _section((tmp_path / "leaderboard.md").read_text(), "n=500, 64 px: reconstruction")
    assert line("close").endswith("| below floor within intervals: psnr |")


def _entry(label, lo, hi, role="model", value=None):
    value = (lo + hi) / 2 if value is None else value
    return {"label": label, "role": role, "values": {"psnr": value}, "ci": {"psnr": (lo, hi)}, "std": {}}


@pytest.mark.parametrize("a,b,separate", [((1.0, 2.0), (2.1, 3.0), True), ((1.0, 2.0), (1.9, 3.0), False),
                                          ((1.0, 2.0), (2.0, 3.0), False), ((3.0, 4.0), (0.0, 2.5), True)])
def test_significance_marks_appear_exactly_when_intervals_separate(a, b, separate):
    sep, within = significant_pairs([_entry("x", *a), _entry("y", *b)], "psnr")
    assert bool(sep) is separate and bool(within) is not separate
    if separate:
        better = "x" if a[0] > b[0] else "y"
        assert sep[0][0] == better  # psnr: higher is better
    # two baseline rows are never compared with each other
    assert significant_pairs([_entry("x", *a, role="floor"), _entry("y", *b, role="ceiling")], "psnr") == ([], [])


def test_seeds_aggregate_to_mean_and_std(tmp_path):
    for seed, psnr in ((0, 20.0), (1, 22.0), (2, 24.0)):
        write_record(tmp_path, _recon("discrete", 500, {"psnr": psnr}, f"2026-01-0{seed + 1}T00:00:00+00:00",
                                      seed=seed, intervals={"psnr": [psnr - 0.5, psnr + 0.5]}))
    build_leaderboard(tmp_path, plots=False)
    md = (tmp_path / "leaderboard.md").read_text()
    row = next(r for r in md.splitlines() if r.startswith("| discrete |"))
    assert "22 ± 2 (3 seeds) [19.5, 24.5]" in row


def test_seeds_pool_across_a_key_added_unset_but_not_across_a_changed_value(tmp_path):
    # seed 0 was written before ``ar.train.new_key`` existed; seeds 1 and 2 carry it unset (None), or with their
    # own thread count: one config. A set value is another config, so it is a row of its own.
    configs = {0: {"ar": {"train": {"lr": 1.0}}},
               1: {"ar": {"train": {"lr": 1.0, "new_key": None, "threads": 1}}},
               2: {"ar": {"train": {"lr": 1.0, "new_key": None}}},
               3: {"ar": {"train": {"lr": 1.0, "new_key": 5}}}}
    for seed, cfg in configs.items():
        write_record(tmp_path, _recon("discrete", 500, {"psnr": 20.0 + seed}, f"2026-01-0{seed + 1}T00:00:00+00:00",
                                      config=cfg, seed=seed))
    build_leaderboard(tmp_path, plots=False)
    rows = [r for r in (tmp_path / "leaderboard.md").read_text().splitlines() if r.startswith("| discrete |")]
    assert len(rows) == 2, rows
    assert any("21 ± 1 (3 seeds)" in r for r in rows) and any("| 23 |" in r for r in rows), rows


def test_csv_keeps_every_run_with_latest_flag_and_intervals(tmp_path):
    _setup(tmp_path)
    build_leaderboard(tmp_path, plots=False)
    with open(tmp_path / "leaderboard.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8
    hybrid = {r["run_id"]: r["latest"] for r in rows if r["label"] == "hybrid"}
    assert hybrid == {"new": "True", "old": "False"}
    assert any(r.get("fd_embedded/star") == "4.0" for r in rows)
    new = next(r for r in rows if r["run_id"] == "new")
    assert new["psnr:lo"] == "24.8" and new["role"] == "model" and new["trained_commit"] == "abc1234"


def test_one_plot_per_protocol_and_stale_plots_removed(tmp_path):
    _setup(tmp_path)
    (tmp_path / "grids").mkdir()
    (tmp_path / "grids" / "recon_eval-hybrid-synthscenes.png").write_bytes(b"\x89PNG")
    stale = tmp_path / "plots" / "tokenizers-old-protocol.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"\x89PNG old")
    out = build_leaderboard(tmp_path)
    assert len(out["plots"]) == 3 and not stale.exists() and out["removed_plots"] == [stale]
    md = (tmp_path / "leaderboard.md").read_text()
    for p in out["plots"]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"plots/{p.name}" in md
    assert "Grids: [hybrid](grids/recon_eval-hybrid-synthscenes.png)" in _section(md, "n=500, 64 px: reconstruction")


def test_cli_and_empty_results(tmp_path, capsys):
    main(["--results", str(tmp_path), "--no-plots"])
    assert "0 records" in capsys.readouterr().out
    assert "No records yet" in (tmp_path / "leaderboard.md").read_text()
    _setup(tmp_path)
    main(["--results", str(tmp_path), "--no-plots"])
    printed = capsys.readouterr().out
    assert "8 records, 2 skipped" in printed and "broken.json" in printed


def test_leaderboard_stage(tmp_path):
    from types import SimpleNamespace

    from hartkit.stages.leaderboard import run
    from hartkit.utils.experiment_logger import NullLogger

    class Tables(NullLogger):  # what the stage hands to the experiment tracker (W&B: a wandb.Table)
        def __init__(self):
            self.tables, self.images = {}, []

        def log_table(self, key, frame):
            self.tables[key] = frame

        def log_image(self, key, path, caption=None, step=None):
            self.images.append(key)

    _setup(tmp_path)
    logger = Tables()
    run(SimpleNamespace(results_dir=tmp_path, logger=logger))
    assert (tmp_path / "leaderboard.md").exists() and (tmp_path / "leaderboard.csv").exists()
    import pandas as pd

    csv = pd.read_csv(tmp_path / "leaderboard.csv")
    table = logger.tables["leaderboard"]
    assert len(table) == int(csv["latest"].sum()) and table["latest"].all()
    assert not table.isna().all().any()  # columns without any value are left out
    assert logger.images and all(k.startswith("leaderboard_plots/") for k in logger.images)  # the plots
