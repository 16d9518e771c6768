"""The ablation lab's controls: choices become method specs; the widgets start at the method's weights."""
from __future__ import annotations

import pytest

from cslearn.lab import AblationLab, spec_from_choices, task_weights
from cslearn.methods import get_method


def test_task_weights_include_the_reference_task_specific_weights():
    assert task_weights("mib", "15-1") == {"unbiased_ce": 1.0, "unbiased_kd": 100.0}
    assert task_weights("mib", "15-5") == {"unbiased_ce": 1.0, "unbiased_kd": 10.0}


@pytest.mark.parametrize("keep, weights, expected", [
    ({}, {}, "mib+sdr"),
    ({"attraction": False}, {}, "mib+sdr:-attraction"),
    ({"attraction": False, "repulsion": False}, {"attraction": 5.0}, "mib+sdr:-attraction,-repulsion"),
    ({}, {"prototype_matching": 0.01, "unbiased_kd": 100.0}, "mib+sdr"),  # unchanged weights are left out
    ({}, {"prototype_matching": 0.1, "unbiased_kd": 10.0}, "mib+sdr:unbiased_kd=10,prototype_matching=0.1"),
])
def test_spec_from_choices(keep, weights, expected):
    spec = spec_from_choices("mib+sdr", keep, weights, task="15-1")
    assert spec == expected
    get_method(spec)  # a valid spec


def test_spec_from_choices_refuses_unknown_terms():
    with pytest.raises(ValueError, match="has no term"):
        spec_from_choices("mib", {"attraction": False}, {})


def test_lab_widgets_start_at_the_method_and_follow_the_controls():
    lab = AblationLab("mib+sdr", "15-1")
    assert list(lab.keep) == ["unbiased_ce", "unbiased_kd", "prototype_matching", "attraction", "repulsion",
                              "feature_sparsity"]
    assert lab.weights["unbiased_kd"].value == pytest.approx(100.0)
    assert lab.spec() == "mib+sdr"
    lab.keep["repulsion"].value = False
    lab.weights["prototype_matching"].value = 0.1
    assert lab.spec() == "mib+sdr:-repulsion,prototype_matching=0.1"
    assert lab.button.description == "Run" and lab.widget.children[-1] is lab.output
