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


def test_schema_2_fields_round_trip_and_schema_1_still_loads(tmp_path):
    rec = _record()
    rec.intervals = {"psnr": [21.0, 22.0]}
    rec.role = "floor"
    rec.noise_floor = {"rfd_embedded": 3.5, "num_images": 100}
    rec.notes = ["per-category fd left out"]
    rec.trained_commit = "abc123"
    back = read_record(write_record(tmp_path, rec))
    assert back == rec and back.schema_version == 2
    old = _record().to_dict()
    for key in ("intervals", "role", "noise_floor", "notes", "trained_commit"):
        old.pop(key)
    old["schema_version"] = 1
    loaded = ResultRecord.from_dict(old)
    assert loaded.role == "model" and loaded.intervals == {} and loaded.trained_commit is None


@pytest.mark.parametrize("field,value,match", [
    ("intervals", {"psnr": [1.0]}, "intervals"),
    ("intervals", {"psnr": ["a", "b"]}, "intervals"),
    ("role", "champion", "role"),
])
def test_bad_schema_2_fields_are_rejected(field, value, match):
    d = _record().to_dict()
    d[field] = value
    with pytest.raises(RecordError, match=match):
        ResultRecord.from_dict(d)
