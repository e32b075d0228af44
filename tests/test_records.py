"""Result records: round trip, atomic write, malformed files are reported not fatal."""

from __future__ import annotations

import json

import pytest

from hartkit.records import Protocol, RecordError, ResultRecord, iter_records, read_record, write_record


def _record(label="hybrid", n=100):
    proto = Protocol(task="reconstruction", dataset="synthscenes", split="test", num_images=n, resolution=64)
    return ResultRecord(stage="recon_eval", label=label, protocol=proto, metrics={"psnr": 21.5, "ssim": 0.7})


def test_round_trip(tmp_path):
    rec = _record()
    path = write_record(tmp_path, rec)
    assert path.parent == tmp_path / "records" / "recon_eval"
    back = read_record(path)
    assert back == rec
    assert not list(path.parent.glob("*.tmp"))


def test_protocol_key_separates_protocols():
    a, b = _record(n=100).protocol, _record(n=500).protocol
    assert a.key() != b.key()
    assert a.key() == _record(label="discrete", n=100).protocol.key()


def test_malformed_records_are_reported_by_file(tmp_path):
    write_record(tmp_path, _record())
    bad_dir = tmp_path / "records" / "recon_eval"
    (bad_dir / "broken.json").write_text("{not json")
    (bad_dir / "wrong.json").write_text(json.dumps({"stage": "x"}))
    good, bad = iter_records(tmp_path)
    assert len(good) == 1
    assert sorted(p.name for p, _ in bad) == ["broken.json", "wrong.json"]


def test_non_numeric_metric_is_rejected():
    d = _record().to_dict()
    d["metrics"] = {"psnr": "high"}
    with pytest.raises(RecordError, match="metrics"):
        ResultRecord.from_dict(d)
