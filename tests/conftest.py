import pytest
from builders import SHARED


@pytest.fixture
def audioset_mini():
    path = SHARED / "data" / "audioset-mini"
    if not (path / "openmic-2018.npz").is_file():
        pytest.skip("../shared/data/audioset-mini is not here (plain clone)")
    return path
