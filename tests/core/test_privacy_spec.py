"""spec.privacy of a TrainingJob: DP-SGD and adversarial options, refused with a message that
names the field and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from modelplane.core.errors import InvalidSpec
from modelplane.core.spec import PrivacySpec, TrainingJob, parse_manifest
from tests.helpers import training_doc

REPO = Path(__file__).resolve().parents[2]


def doc(privacy: Any, replicas: int = 1) -> dict[str, Any]:
    return training_doc(replicas=replicas, accelerators=0, privacy=privacy)


def refused(privacy: Any, replicas: int = 1) -> InvalidSpec:
    with pytest.raises(InvalidSpec) as err:
        parse_manifest(doc(privacy, replicas))
    return err.value


def test_the_example_parses_with_both_options() -> None:
    m = parse_manifest(yaml.safe_load((REPO / "examples" / "dp-training-job.yaml").read_text()))
    assert isinstance(m, TrainingJob) and m.spec.privacy is not None
    dp, adv = m.spec.privacy.differential_privacy, m.spec.privacy.adversarial
    assert dp is not None and dp.target_epsilon == 3.0 and dp.delta == 1e-5 and dp.epochs == 6
    assert adv is not None and adv.method == "pgd" and adv.steps == 3


def test_privacy_is_optional_and_json_round_trips_by_alias() -> None:
    assert parse_manifest(training_doc(accelerators=0, replicas=1)).spec.privacy is None  # type: ignore[union-attr]
    m = parse_manifest(doc({"differentialPrivacy": {"targetEpsilon": 2, "delta": 1e-5, "noiseMultiplier": 1.1},
                            "adversarial": {"method": "fgsm", "epsilon": 0.05}}))
    assert isinstance(m, TrainingJob) and m.spec.privacy is not None
    text = m.spec.privacy.model_dump_json(by_alias=True, exclude_none=True)
    assert '"noiseMultiplier":1.1' in text and "noise_multiplier" not in text
    assert PrivacySpec.model_validate_json(text) == m.spec.privacy


@pytest.mark.parametrize(("privacy", "words"), [
    ({"differentialPrivacy": {"targetEpsilon": 3, "delta": 1.5, "epochs": 2}}, ["delta must be in (0, 1)", "1e-5"]),
    ({"differentialPrivacy": {"targetEpsilon": 0, "delta": 1e-5, "epochs": 2}}, ["targetEpsilon must be > 0"]),
    ({"differentialPrivacy": {"targetEpsilon": 3, "delta": 1e-5, "epochs": 2, "maxGradNorm": -1}},
     ["maxGradNorm must be > 0"]),
    ({"differentialPrivacy": {"targetEpsilon": 3, "delta": 1e-5, "noiseMultiplier": 0}},
     ["noiseMultiplier must be > 0"]),
    ({"differentialPrivacy": {"targetEpsilon": 3, "delta": 1e-5}}, ["set epochs", "noiseMultiplier"]),
    ({"differentialPrivacy": {"targetEpsilon": 3, "delta": 1e-5, "epochs": 0}}, ["epochs must be >= 1"]),
    ({"differentialPrivacy": {"targetEpsilon": 3, "delta": 1e-5, "epochs": 2, "accountant": "moments"}},
     ["accountant"]),
    ({"adversarial": {"method": "fgsm", "epsilon": 0.1, "steps": 5}}, ["pgd only"]),
    ({"adversarial": {"method": "pgd", "epsilon": -0.1}}, ["epsilon must be > 0"]),
    ({"adversarial": {"method": "pgd", "epsilon": 0.1, "ratio": 0}}, ["ratio must be in (0, 1]"]),
    ({"adversarial": {"method": "cw", "epsilon": 0.1}}, ["fgsm", "pgd"]),
    ({"adversarial": {"method": "pgd", "epsilon": 0.1, "alpha": 0}}, ["alpha must be > 0"]),
    ({}, ["differentialPrivacy and/or adversarial"]),
    ({"differentialPrivacy": {"targetEpsilon": 3, "delta": 1e-5, "epochs": 2, "epsilon": 1}}, ["epsilon"]),
])
def test_bad_privacy_options_are_refused_naming_the_field(privacy: dict[str, Any], words: list[str]) -> None:
    err = refused(privacy)
    assert err.field.startswith("spec.privacy"), err.field
    for w in words:
        assert w in err.message, err.message


def test_dp_with_several_replicas_is_refused_but_adversarial_alone_is_fine() -> None:
    err = refused({"differentialPrivacy": {"targetEpsilon": 3, "delta": 1e-5, "epochs": 2}}, replicas=2)
    assert "replicas: 1" in err.message
    parse_manifest(doc({"adversarial": {"method": "pgd", "epsilon": 0.1}}, replicas=2))


@given(st.floats(allow_nan=False, allow_infinity=False, width=32))
def test_delta_is_accepted_exactly_inside_the_open_unit_interval(delta: float) -> None:
    privacy = {"differentialPrivacy": {"targetEpsilon": 1.0, "delta": delta, "noiseMultiplier": 1.0}}
    if 0 < delta < 1:
        parse_manifest(doc(privacy))
    else:
        assert "delta" in refused(privacy).message
