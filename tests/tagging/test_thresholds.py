
import pytest
import soundfile as sf
from builders import SR, music

from instag.common.errors import InstagError
from instag.tagging.thresholds import load_thresholds

CLASSES = ("piano", "speech", "violin")


def thresholds_file(tmp_path, text, name="t.csv"):
    (tmp_path / name).write_text(text)
    return tmp_path / name


def test_a_file_overrides_the_default_per_instrument(tmp_path):
    path = thresholds_file(tmp_path, "instrument,threshold\npiano,0.3\nviolin, 0.7\n")
    assert load_thresholds(CLASSES, 0.5, path) == {"piano": 0.3, "speech": 0.5, "violin": 0.7}


def test_json_works_too(tmp_path):
    path = thresholds_file(tmp_path, '{"speech": 0.9}', "t.json")
    assert load_thresholds(CLASSES, 0.5, path)["speech"] == 0.9


@pytest.mark.parametrize("text, where", [
    ('{"piano": null}', "'piano'"),
    ('{"piano": 1.5}', "'piano'"),
    ("piano,0.4\nspeech,1.5\n", "line 2"),
    ("piano,0.4\nspeech;0.99\n", "line 2"),
    ("piano,-0.1\n", "line 1"),
])
def test_a_bad_threshold_is_an_error_naming_where_it_is(tmp_path, text, where):
    with pytest.raises(InstagError, match=where):
        load_thresholds(CLASSES, 0.5, thresholds_file(tmp_path, text))


def test_a_default_outside_0_1_is_refused():
    with pytest.raises(InstagError, match="outside"):
        load_thresholds(CLASSES, 2.0, None)


def test_an_unknown_instrument_is_refused(tmp_path):
    with pytest.raises(InstagError, match="unknown instruments"):
        load_thresholds(CLASSES, 0.5, thresholds_file(tmp_path, "tuba,0.5\n"))


# -- 9. thresholds files as people write them -----------------------------------------------------
def test_a_threshold_of_400_digits_is_one_line(run_tag, tmp_path):
    sf.write(tmp_path / "a.wav", music(2, 1), SR)
    (tmp_path / "t.json").write_text('{"c0": 1' + "0" * 400 + "}")
    result = run_tag(tmp_path / "a.wav", "--out", tmp_path / "t.csv", "--thresholds-file",
                     tmp_path / "t.json")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.startswith("error: ") and "outside [0, 1]" in result.output


@pytest.mark.parametrize("text", ['{"c0": 0.3}', "c0,0.3\n"], ids=["json", "csv"])
def test_a_thresholds_file_with_a_utf8_bom_is_read(tmp_path, text):
    from instag.tagging.thresholds import load_thresholds

    (tmp_path / "t.txt").write_bytes("\ufeff".encode() + text.encode())
    assert load_thresholds(("c0", "c1"), None, tmp_path / "t.txt") == {"c0": 0.3, "c1": 0.5}


def test_thresholds_with_a_null_are_one_line_and_exit_2(run_tag, library, tmp_path):
    (tmp_path / "t.json").write_text('{"c0": null}')
    result = run_tag(library / "other", "--out", tmp_path / "t.csv", "--thresholds",
                     tmp_path / "t.json")
    assert result.exit_code == 2 and "not a number" in result.output
