"""Methods as data: the reference weights (methods.md §2-3, §7), ablation helpers, the objective."""
from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from cslearn.losses import TERMS, Batch
from cslearn.methods import METHODS, Method, Term, get_method, objective_for_step
from cslearn.models.output import SegOutput
from cslearn.protocol import get_task

# methods.md §7, written out: method -> ((term, weight), ...), classifier init, joint.
REFERENCE = {
    "ft": ((("ce", 1.0),), "default", False),
    "joint": ((("ce", 1.0),), "default", True),
    "lwf": ((("ce", 1.0), ("kd", 100.0)), "default", False),
    "lwf-mc": ((("bce", 1.0), ("bce_distillation", 10.0)), "default", False),
    "ilt": ((("ce", 1.0), ("kd", 100.0), ("feature_distillation", 100.0)), "default", False),
    "mib": ((("unbiased_ce", 1.0), ("unbiased_kd", 10.0)), "background", False),
}


def weights(method: Method) -> tuple[tuple[str, float], ...]:
    return tuple((term.name, term.weight) for term in method.terms)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_methods_match_the_reference_table(name):
    terms, init, joint = REFERENCE[name]
    method = get_method(name)
    assert method.name == name
    assert weights(method) == terms
    assert method.classifier_init == init
    assert method.joint is joint


def test_every_registered_method_is_in_the_reference_table():
    assert set(METHODS) >= set(REFERENCE)


@pytest.mark.parametrize("dataset, task_name, kd_weight", [
    ("voc", "15-1", 100.0),
    ("voc", "15-5s", 100.0),  # MiB's code name of 15-1
    ("voc", "15-5", 10.0),
    ("voc", "19-1", 10.0),
    ("ade", "100-50", 10.0),
    ("ade", "100-10", 10.0),
    ("ade", "50-50", 10.0),
])
def test_mib_kd_weight_depends_on_the_task(dataset, task_name, kd_weight):
    method = METHODS["mib"].for_task(get_task(dataset, task_name))
    assert weights(method) == (("unbiased_ce", 1.0), ("unbiased_kd", kd_weight))
    assert method.name == "mib"
    assert method.classifier_init == "background"
    assert weights(METHODS["mib"]) == (("unbiased_ce", 1.0), ("unbiased_kd", 10.0))  # unchanged


@pytest.mark.parametrize("name", ["ft", "lwf", "lwf-mc", "ilt"])
def test_other_methods_do_not_change_on_15_1(name):
    assert weights(METHODS[name].for_task(get_task("voc", "15-1"))) == REFERENCE[name][0]


def test_without_returns_a_new_method():
    ilt = METHODS["ilt"]
    ablation = ilt.without("feature_distillation")
    assert weights(ablation) == (("ce", 1.0), ("kd", 100.0))
    assert ablation.name != "ilt"
    assert weights(ilt) == REFERENCE["ilt"][0]
    assert weights(METHODS["ilt"]) == REFERENCE["ilt"][0]
    assert weights(ilt.without("kd", "feature_distillation")) == (("ce", 1.0),)


def test_with_weight_returns_a_new_method():
    mib = METHODS["mib"]
    changed = mib.with_weight("unbiased_kd", 1)
    assert weights(changed) == (("unbiased_ce", 1.0), ("unbiased_kd", 1.0))
    assert changed.classifier_init == "background"
    assert weights(METHODS["mib"]) == (("unbiased_ce", 1.0), ("unbiased_kd", 10.0))


def test_extend_returns_a_new_method():
    lwf = METHODS["lwf"]
    extended = lwf.extend(Term("feature_distillation", 100))
    assert weights(extended) == (("ce", 1.0), ("kd", 100.0), ("feature_distillation", 100.0))
    assert weights(METHODS["lwf"]) == (("ce", 1.0), ("kd", 100.0))


def test_bad_term_names_raise():
    with pytest.raises(ValueError, match="unknown loss term 'unbiased_cross_entropy'"):
        Term("unbiased_cross_entropy", 1)
    with pytest.raises(ValueError, match="no term"):
        METHODS["mib"].without("kd")
    with pytest.raises(ValueError, match="no term"):
        METHODS["mib"].with_weight("feature_distillation", 5)
    with pytest.raises(ValueError, match="already has"):
        METHODS["lwf"].extend(Term("kd", 1))
    with pytest.raises(ValueError, match="feature_distillation"):  # twice in one call
        METHODS["lwf"].extend(Term("feature_distillation", 1), Term("feature_distillation", 2))
    with pytest.raises(ValueError, match="known methods"):
        get_method("plop-but-misspelt")


# ---------------------------------------------------------------------------------------------
# The objective on a random batch
# ---------------------------------------------------------------------------------------------

def random_batch(num_old: int, num_new: int, step: int, seed: int = 0) -> Batch:
    """B=2, 8x8 logits, 2x2 features; targets hold 0, new channels and some 255."""
    generator = torch.Generator().manual_seed(seed)
    batch_size, size, feature_size, body, head = 2, 8, 2, 5, 4

    def output(channels: int, requires_grad: bool) -> SegOutput:
        def random(*shape):
            return torch.randn(*shape, generator=generator).requires_grad_(requires_grad)
        return SegOutput(logits=random(batch_size, channels, size, size),
                         features={"body": random(batch_size, body, feature_size, feature_size),
                                   "pre_logits": random(batch_size, head, feature_size, feature_size),
                                   "logits_low": random(batch_size, channels, feature_size, feature_size)})

    labels = torch.tensor([0] + list(range(max(num_old, 1), num_old + num_new)))
    targets = labels[torch.randint(len(labels), (batch_size, size, size), generator=generator)]
    targets[torch.rand(batch_size, size, size, generator=generator) < 0.2] = 255
    return Batch(images=torch.randn(batch_size, 3, size, size, generator=generator), targets=targets,
                 out=output(num_old + num_new, True),
                 old=output(num_old, False) if num_old else None,
                 num_old=num_old, num_new=num_new, step=step)


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_objective_total_is_the_weighted_sum(name):
    batch = random_batch(num_old=4, num_new=2, step=1)
    method = METHODS[name]
    objective = objective_for_step(method, 1)
    total, values = objective(batch)
    expected_terms = REFERENCE[name][0] if name != "joint" else (("ce", 1.0),)
    assert sorted(values) == sorted(term for term, _ in expected_terms)
    separately = {term: TERMS[term]()(batch) for term, _ in expected_terms}
    for term, value in values.items():
        assert not value.requires_grad  # logged values are detached
        assert value.item() == pytest.approx(separately[term].item(), rel=1e-6)
    expected = sum(weight * separately[term].item() for term, weight in expected_terms)
    assert total.item() == pytest.approx(expected, rel=1e-6)
    total.backward()
    assert batch.out.logits.grad is not None and batch.out.logits.grad.abs().sum() > 0


def test_objective_follows_changed_weights():
    batch = random_batch(num_old=4, num_new=2, step=1, seed=1)
    total_10, values = objective_for_step(METHODS["mib"], 1)(batch)
    total_1, _ = objective_for_step(METHODS["mib"].with_weight("unbiased_kd", 1.0), 1)(batch)
    assert (total_10 - total_1).item() == pytest.approx(9.0 * values["unbiased_kd"].item(), rel=1e-5)
    assert values["unbiased_kd"].item() > 0


def test_mib_on_15_1_uses_kd_100_in_the_objective():
    batch = random_batch(num_old=4, num_new=1, step=2, seed=2)
    method = METHODS["mib"].for_task(get_task("voc", "15-1"))
    total, values = objective_for_step(method, 2)(batch)
    assert total.item() == pytest.approx(values["unbiased_ce"].item() + 100 * values["unbiased_kd"].item(),
                                         rel=1e-6)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_step_0_is_plain_cross_entropy(name):
    batch = random_batch(num_old=0, num_new=5, step=0, seed=3)
    objective = objective_for_step(METHODS[name], 0)
    assert objective.weights == {"ce": 1.0}
    assert not objective.needs_old
    total, values = objective(batch)
    assert list(values) == ["ce"]
    # CE averaged over all B*H*W pixels, ignored pixels counted with loss 0 (methods.md §1).
    reference = F.cross_entropy(batch.out.logits, batch.targets, ignore_index=255, reduction="none").mean()
    assert total.item() == pytest.approx(reference.item(), rel=1e-6)


def test_needs_old_reflects_the_terms():
    assert objective_for_step(METHODS["mib"], 1).needs_old
    assert not objective_for_step(METHODS["ft"], 1).needs_old
    assert not objective_for_step(METHODS["joint"], 1).needs_old  # joint: always plain CE


# ---- method specs: ablations as plain strings ----

def test_spec_drops_reweights_adds_and_sets_options():
    from cslearn.methods import parse_method

    method = get_method("mib+sdr:-attraction,-repulsion,prototype_matching=0.1,+kd=2")
    assert method.name == "mib+sdr:-attraction,-repulsion,prototype_matching=0.1,+kd=2"
    assert method.term_names == ["unbiased_ce", "unbiased_kd", "prototype_matching", "feature_sparsity", "kd"]
    weights = {term.name: term.weight for term in method.terms}
    assert weights["prototype_matching"] == 0.1 and weights["kd"] == 2.0 and weights["feature_sparsity"] == 1e-3
    assert method.classifier_init == "background"
    assert parse_method("mib:init=default").classifier_init == "default"
    ucd = get_method("mib+ucd:contrastive_distillation.uncertainty=false,contrastive_distillation.temperature=0.5")
    assert dict(ucd.terms[-1].options) == {"uncertainty": False, "temperature": 0.5}


def test_spec_weight_wins_over_the_task_specific_weight():
    from cslearn.protocol import get_task

    task = get_task("voc", "15-1")
    assert {t.name: t.weight for t in get_method("mib").for_task(task).terms}["unbiased_kd"] == 100.0
    assert {t.name: t.weight for t in get_method("mib:unbiased_kd=5").for_task(task).terms}["unbiased_kd"] == 5.0
    assert get_method("mib:-unbiased_kd").for_task(task).term_names == ["unbiased_ce"]  # no KeyError


def test_spec_option_wins_over_the_dataset_option():
    from cslearn.protocol import get_task

    plop = get_method("plop:local_pod.feature_weight=0.5").for_task(get_task("ade", "100-50"))
    options = dict(plop.terms[1].options)
    assert options["feature_weight"] == 0.5 and options["logits_weight"] == 1e-5


@pytest.mark.parametrize("spec, message", [
    ("nope:-kd", "unknown method 'nope'"),
    ("mib:-kd", "has no term"),
    ("mib:kd=3", "has no term"),
    ("mib:+unbiased_kd=3", "already has"),
    ("mib:+not_a_term=1", "unknown loss term"),
    ("mib:unbiased_kd=abc", "could not convert"),
    ("mib+ucd:contrastive_distillation.temprature=1", "temprature"),
    ("mib:-unbiased_ce,-unbiased_kd", "removes every loss term"),
    ("mib:init=random", "init is 'background' or 'default'"),
    ("mib:unbiased_kd", "cannot read 'unbiased_kd'"),
])
def test_bad_specs_say_what_is_wrong_and_show_the_syntax(spec, message):
    with pytest.raises(ValueError, match="(?s)" + re.escape(message) + ".*") as error:
        get_method(spec)
    if ":" in spec and not spec.startswith("nope"):
        assert "BASE:EDIT" in str(error.value)


def test_step0_signature_names_what_observes_step0_not_the_terms():
    sdr = get_method("mib+sdr").step0_signature()
    assert sdr == get_method("mib+sdr:-attraction,-repulsion").step0_signature() == get_method("sdr").step0_signature()
    assert "state:sdr_prototypes" in sdr
    assert get_method("mib").step0_signature() == get_method("mib+ucd").step0_signature() == []
    assert get_method("mib").step0_signature() != sdr
