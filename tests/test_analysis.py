import numpy as np
import pytest

from animetag.data.tag_stats import confusions, lift_matrix


def test_lift_divides_out_frequency_so_a_common_tag_implies_nothing():
    rng = np.random.default_rng(0)
    n = 20000
    solo = rng.uniform(size=n) < 0.9  # on most images, independent of the rest
    a = rng.uniform(size=n) < 0.1
    b = a & (rng.uniform(size=n) < 0.8)  # b comes (mostly) with a
    c = rng.uniform(size=n) < 0.2  # independent
    lift = lift_matrix(np.stack([solo, a, b, c], 1).astype(np.uint8))
    assert np.isnan(np.diag(lift)).all()
    assert lift[1, 2] == pytest.approx(1 / a.mean(), rel=0.05)  # P(a,b) = P(b): lift = 1 / P(a)
    assert lift[1, 2] == pytest.approx(lift[2, 1])
    for j in (1, 2, 3):  # solo and c are independent of everything
        assert lift[0, j] == pytest.approx(1.0, abs=0.05)
        assert lift[3, j if j != 3 else 1] == pytest.approx(1.0, abs=0.15)


def test_confusions_find_the_tag_predicted_in_place_of_another():
    rng = np.random.default_rng(1)
    n = 400
    y = (rng.uniform(size=(n, 3)) < 0.3).astype(np.uint8)
    pred = y.astype(bool).copy()
    # images tagged long_hair but not very_long_hair get very_long_hair predicted 70% of the time
    only = (y[:, 0] == 1) & (y[:, 1] == 0)
    pred[only, 1] = rng.uniform(size=only.sum()) < 0.7
    df = confusions(y, pred, ["long_hair", "very_long_hair", "hat"], min_count=5)
    top = df.iloc[0]
    assert (top["tag"], top["predicted"]) == ("long_hair", "very_long_hair")
    assert top["rate"] == pytest.approx(pred[only, 1].mean())
    assert top["rate_elsewhere"] == pytest.approx(0.0)
    assert (df["excess"].iloc[1:] < 0.05).all()  # nothing else is confused


def test_captions_are_wrapped_to_fit_a_panel():
    from animetag.evaluation.plots import wrap_caption

    text = "hit: " + ", ".join(f"tag_number_{i}" for i in range(30)) + "\nmissed: a, b"
    out = wrap_caption(text, width=36, max_lines=7)
    lines = out.split("\n")
    assert len(lines) == 7 and all(len(line) <= 40 for line in lines) and lines[-1].endswith("...")
    assert wrap_caption("hit: solo\nmissed: hat") == "hit: solo\nmissed: hat"  # short ones stay


def test_near_implications_keep_real_ones_and_drop_a_tag_that_is_everywhere():
    from animetag.data.tag_stats import near_implications

    rng = np.random.default_rng(2)
    n = 3000
    solo = rng.uniform(size=n) < 0.95
    very_long = rng.uniform(size=n) < 0.1
    long_hair = very_long | (rng.uniform(size=n) < 0.3)  # very_long_hair -> long_hair
    Y = np.stack([solo, very_long, long_hair], 1).astype(np.uint8)
    df = near_implications(Y, ["solo", "very_long_hair", "long_hair"], min_p=0.9)
    pairs = set(zip(df["tag"], df["implies"]))
    assert ("very_long_hair", "long_hair") in pairs
    assert not any(b == "solo" for _, b in pairs)  # P(solo | anything) is high, its lift about 1
