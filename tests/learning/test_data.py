import json

import numpy as np
import pytest
from builders import random_openmic

from instag.common.errors import InstagError
from instag.learning.data import OPENMIC_CLASSES, load_openmic


def test_loads_classes_splits_labels_and_mask(tmp_path):
    data = load_openmic(random_openmic(tmp_path, n=40, n_classes=3))
    assert data.classes == ("c0", "c1", "c2")
    assert len(data.train) == 30 and len(data.test) == 10
    with np.load(tmp_path / "openmic-2018.npz") as npz:
        y_true, y_mask = npz["Y_true"][:30], npz["Y_mask"][:30]
    np.testing.assert_array_equal(data.train.labels, (y_true >= 0.5).astype(np.float32))
    np.testing.assert_array_equal(data.train.mask, y_mask)


def test_model_input_is_features_over_255(tmp_path):
    data = load_openmic(random_openmic(tmp_path))
    np.testing.assert_allclose(data.test.inputs(), data.test.X / 255.0, rtol=1e-6)


def test_class_order_comes_from_the_class_map(tmp_path):
    random_openmic(tmp_path, n_classes=3)
    (tmp_path / "class-map.json").write_text(json.dumps({"zeta": 0, "alpha": 2, "mid": 1}))
    assert load_openmic(tmp_path).classes == ("zeta", "mid", "alpha")


def test_openmic_vocabulary_has_twenty_instruments():
    assert len(OPENMIC_CLASSES) == 20 and OPENMIC_CLASSES[0] == "accordion"


def test_accepts_train01_and_test01_partition_names(tmp_path):
    random_openmic(tmp_path)
    parts = tmp_path / "partitions"
    (parts / "split01_train.csv").rename(parts / "train01.txt")
    (parts / "split01_test.csv").rename(parts / "test01.txt")
    assert len(load_openmic(tmp_path).train) == 30


def test_validation_is_fifteen_percent_of_train_drawn_from_the_seed(tmp_path):
    data = load_openmic(random_openmic(tmp_path, n=400))
    train, val = data.split_validation(seed=0)
    assert len(val) == 45 and len(train) == 255
    assert not set(train.keys) & set(val.keys)
    assert list(data.split_validation(seed=0)[1].keys) == list(val.keys)
    assert list(data.split_validation(seed=1)[1].keys) != list(val.keys)


def test_missing_npz_names_the_file(tmp_path):
    random_openmic(tmp_path)
    (tmp_path / "openmic-2018.npz").unlink()
    with pytest.raises(InstagError, match="openmic-2018.npz: missing"):
        load_openmic(tmp_path)


def test_wrong_feature_dtype_is_refused(tmp_path):
    random_openmic(tmp_path)
    path = tmp_path / "openmic-2018.npz"
    arrays = dict(np.load(path))
    arrays["X"] = arrays["X"].astype(np.float32)
    np.savez(path, **arrays)
    with pytest.raises(InstagError, match="X must be uint8"):
        load_openmic(tmp_path)


def test_label_shape_must_match_the_class_map(tmp_path):
    random_openmic(tmp_path, n_classes=3)
    (tmp_path / "class-map.json").write_text(json.dumps({"a": 0, "b": 1}))
    with pytest.raises(InstagError, match="Y_true must be"):
        load_openmic(tmp_path)


def test_split_keys_absent_from_the_npz_are_refused(tmp_path):
    random_openmic(tmp_path)
    with open(tmp_path / "partitions" / "split01_test.csv", "a") as f:
        f.write("not-a-clip_0\n")
    with pytest.raises(InstagError, match="split01_test.csv: 1 keys are not in"):
        load_openmic(tmp_path)


def errata_openmic(root, piano_label: float, piano_observed: bool):
    """OpenMIC's own vocabulary, with the clips its errata names among others."""
    from builders import write_openmic

    keys = ["095253_134400", "095263_96000", "113025_99840", "000046_3840"]
    y_true = np.zeros((4, 20), np.float32)
    y_mask = np.zeros((4, 20), bool)
    piano = OPENMIC_CLASSES.index("piano")
    y_true[0, piano], y_mask[0, piano] = piano_label, piano_observed
    X = np.zeros((4, 10, 128), np.uint8)
    return write_openmic(root, X, y_true, y_mask, keys, list(OPENMIC_CLASSES), n_train=2)


def test_openmics_corrected_labels_are_applied_where_the_archive_lacks_them(tmp_path):
    data = load_openmic(errata_openmic(tmp_path, piano_label=0.0, piano_observed=False))
    assert data.errata == {"labels_corrected": 3, "labels_already_right": 0}
    piano, mallets = OPENMIC_CLASSES.index("piano"), OPENMIC_CLASSES.index("mallet_percussion")
    assert data.train.labels[0, piano] == 1 and data.train.mask[0, piano]
    assert data.train.labels[1, mallets] == 1 and data.train.mask[1, mallets]
    trumpet = OPENMIC_CLASSES.index("trumpet")
    assert data.test.labels[0, trumpet] == 1 and data.test.mask[0, trumpet]
    assert data.test.mask[1].sum() == 0  # no other label touched


def test_an_archive_that_has_the_corrections_already_is_said_so(tmp_path):
    data = load_openmic(errata_openmic(tmp_path, piano_label=1.0, piano_observed=True))
    assert data.errata == {"labels_corrected": 2, "labels_already_right": 1}


def test_the_feature_check_never_samples_a_clip_whose_audio_was_corrupted(tmp_path, monkeypatch):
    from instag.learning.data import CORRUPTED_TRACKS
    from instag.provision import verify

    audio = tmp_path / "audio" / "000"
    audio.mkdir(parents=True)
    keys = {f"{track}_{start}" for track in CORRUPTED_TRACKS for start in (0, 960, 1920)}
    keys |= {"000046_3840", "000135_30720", "000139_119040"}
    for key in keys:
        (audio / f"{key}.ogg").write_bytes(b"clip")
    assert verify.sample_from_folder(tmp_path / "audio", keys, tmp_path / "sample", n=3) == 3
    assert sorted(p.stem for p in (tmp_path / "sample").iterdir()) == [
        "000046_3840", "000135_30720", "000139_119040"]
