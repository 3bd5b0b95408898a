"""FALCON's defaults are the paper's explicit settings; the authors' code choices stay reachable."""

from __future__ import annotations

import pytest

from replens.explain.falcon import GROUP_ALPHA_STD, SINGLE_FEATURE_ALPHA_STD, FalconConfig


def test_defaults_follow_the_seed_text():
    groups = FalconConfig()
    assert groups.min_score == pytest.approx(0.08)  # section 4.2.2: "a threshold (in practice, 0.08)"
    assert groups.beta == pytest.approx(0.7) and groups.epsilon == "feature"  # Eq. 4.2, section 4.2.2
    assert groups.alpha_multiplier == GROUP_ALPHA_STD == 5.0  # groups: the authors' mean + 5 std
    single = FalconConfig(mode="features")
    assert single.alpha_multiplier == SINGLE_FEATURE_ALPHA_STD == 16.0  # appendix B.3: mean(H) + 16 std(H)


def test_the_authors_code_choices_are_options():
    code = FalconConfig(mode="features", alpha_multiplier=5.0, beta=0.3, epsilon="global", min_score=0.0)
    assert (code.alpha_multiplier, code.beta, code.epsilon, code.min_score) == (5.0, 0.3, "global", 0.0)
