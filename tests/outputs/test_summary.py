"""The summary CSV (`--summary`): a row per file saying what is in it, and none at all from a
run that failed."""


import soundfile as sf
from builders import SR, music


# -- which instruments, and at what threshold ----------------------------------------------------
def test_the_summary_csv_has_a_row_per_file_saying_what_is_in_it(run_tag, tmp_path):
    from builders import read_csv

    sf.write(tmp_path / "a.wav", music(12, 1), SR)
    (tmp_path / "bad.wav").write_text("not audio")
    result = run_tag(tmp_path, "--out", tmp_path / "t.csv", "--summary", tmp_path / "s.csv",
                     "--threshold", "0.3")
    rows = read_csv(tmp_path / "s.csv")
    assert list(rows[0]) == ["path", "status", "instruments", "probabilities", "duration_s",
                             "reason"]
    assert [(r["path"], r["status"]) for r in rows] == [(str(tmp_path / "a.wav"), "ok"),
                                                       (str(tmp_path / "bad.wav"), "error")]
    tagged = {r["instrument"] for r in read_csv(tmp_path / "t.csv") if r["present"] == "1"}
    assert set(rows[0]["instruments"].split("; ")) == tagged and rows[0]["duration_s"] == "12.0"
    assert rows[1]["reason"] and result.exit_code == 1


def test_the_summary_says_how_sure_it_is_of_each_instrument(run_tag, tmp_path):
    from builders import read_csv

    sf.write(tmp_path / "a.wav", music(20, 1), SR)
    (tmp_path / "bad.wav").write_text("not audio")
    run_tag(tmp_path, "--out", tmp_path / "t.csv", "--summary", tmp_path / "s.csv",
            "--threshold", "0.3", "--bag", "10")
    ok, bad = read_csv(tmp_path / "s.csv")
    best: dict[str, float] = {}  # each instrument's highest bag probability
    for r in read_csv(tmp_path / "t.csv"):
        if r["status"] == "ok":
            best[r["instrument"]] = max(best.get(r["instrument"], 0), float(r["probability"]))
    present = ok["instruments"].split("; ")
    assert len(present) >= 2  # something to order
    assert ok["probabilities"] == "; ".join(f"{c} {best[c]:.2f}" for c in present)
    assert bad["probabilities"] == "" and bad["instruments"] == ""


def test_a_failed_run_leaves_no_summary_either(run_tag, tmp_path, monkeypatch):
    from instag.tagging.scoring import Scoring

    sf.write(tmp_path / "a.wav", music(3, 1), SR)
    old = "path,status,instruments,duration_s,reason\nold summary,ok,,,\n"
    (tmp_path / "s.csv").write_text(old)

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Scoring, "score_many", broken)
    result = run_tag(tmp_path, "--out", tmp_path / "t.csv", "--summary", tmp_path / "s.csv")
    assert result.exit_code == 2
    assert (tmp_path / "s.csv").read_text() == old and not (tmp_path / "t.csv").exists()
