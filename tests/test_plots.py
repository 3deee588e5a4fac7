"""lmlab.plots: validation BLEU against training time from metrics.jsonl."""

from __future__ import annotations

import json

import pytest

from lmlab.errors import DataError
from lmlab.plots import metric_vs_time, plot_bleu_vs_time


def _run(tmp_path, name, records):
    d = tmp_path / name
    d.mkdir()
    lines = [json.dumps(r) for r in records]
    (d / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 99, "val_bl')  # torn last line
    return d


RECORDS = [
    {"step": 20, "loss": 8.0, "elapsed_s": 30.0},
    {"step": 40, "loss": 7.0, "elapsed_s": 60.0, "val_loss": 6.0, "val_bleu": 5.0},
    {"step": 60, "loss": 6.0, "elapsed_s": 90.0},
    {"step": 80, "loss": 5.0, "elapsed_s": 120.0, "val_loss": 4.0, "val_bleu": 12.5},
    {"step": 80, "loss": 5.0, "elapsed_s": 126.0, "val_loss": 4.0, "val_bleu": 12.0},  # resumed: logged again
    {"step": 100, "loss": 4.0, "elapsed_s": 150.0, "val_bleu": float("nan")},
]


def test_metric_vs_time_minutes_by_step_last_wins():
    assert metric_vs_time(RECORDS) == [(1.0, 5.0), (2.1, 12.0)]
    assert metric_vs_time(RECORDS, "val_loss") == [(1.0, 6.0), (2.1, 4.0)]
    assert metric_vs_time(RECORDS, "nothing") == []


def test_plot_writes_a_png(tmp_path):
    a = _run(tmp_path, "a", RECORDS)
    b = _run(
        tmp_path,
        "b",
        [{"step": 10, "elapsed_s": 45.0, "val_bleu": 3.0}, {"step": 20, "elapsed_s": 95.0, "val_bleu": 9.0}],
    )
    out = plot_bleu_vs_time([a, b], tmp_path / "img" / "bleu.png", target=37)
    assert out == tmp_path / "img" / "bleu.png"
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
    import matplotlib.image

    img = matplotlib.image.imread(out)
    assert img.shape[0] > 100 and img.shape[1] > 100
    assert not list((tmp_path / "img").glob("*.tmp*"))  # written atomically
    plot_bleu_vs_time({"run A": a}, tmp_path / "one.png")
    assert (tmp_path / "one.png").read_bytes()[:4] == b"\x89PNG"


def test_plot_errors_name_the_run(tmp_path):
    no_bleu = _run(tmp_path, "nobleu", [{"step": 1, "elapsed_s": 1.0, "loss": 3.0}])
    with pytest.raises(DataError, match="nobleu.*val_bleu"):
        plot_bleu_vs_time([no_bleu], tmp_path / "x.png")
    with pytest.raises(DataError, match="no metrics.jsonl"):
        plot_bleu_vs_time([tmp_path / "missing"], tmp_path / "x.png")
    with pytest.raises(DataError, match="no runs"):
        plot_bleu_vs_time([], tmp_path / "x.png")
