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
