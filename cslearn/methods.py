"""Methods as data: a method is a list of weighted loss terms plus two optional behaviours.

    MiB = Method("mib", terms=(Term("unbiased_ce", 1), Term("unbiased_kd", 10)),
                 classifier_init="background")

An ablation is a one-liner: `METHODS["ilt"].without("feature_distillation")`,
`METHODS["mib"].with_weight("unbiased_kd", 1)`, `METHODS["lwf"].extend(Term("feature_distillation", 100))`.
Every method trains step 0 with plain cross-entropy (the reference protocol); its terms apply
at steps t >= 1. Weights are those of the reference implementations (see each entry).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from cslearn.losses import REWRITERS, TERMS
from cslearn.losses.base import LossTerm
from cslearn.objective import Objective
from cslearn.protocol import Task


@dataclass(frozen=True)
class Term:
    """One weighted loss term: `name` is a key of `cslearn.losses.TERMS`."""

    name: str
    weight: float = 1.0
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in TERMS:
            raise ValueError(f"unknown loss term '{self.name}'; known terms: {', '.join(sorted(TERMS))}")


@dataclass(frozen=True)
class Method:
    """A continual-learning method: weighted terms for steps t >= 1, and how to start a step.

    classifier_init: "default" (PyTorch's init for the new classifier) or "background"
                     (MiB's background-based initialisation).
    joint:           train one step on all classes with all images (the upper bound).
    task_weights:    weights that the reference changes for specific tasks,
                     {(dataset, task steps name): {term: weight}}.
    target_rewriter: a key of REWRITERS (PLOP's pseudo-labels) applied at steps t >= 1.
    dataset_options: term options that the reference changes per dataset,
                     {dataset: {term: {option: value}}} (PLOP's POD weights on ADE20K).
    """

    name: str
    terms: tuple[Term, ...]
    classifier_init: str = "default"
    joint: bool = False
    task_weights: Mapping[tuple[str, str], Mapping[str, float]] = field(default_factory=dict)
    target_rewriter: Optional[str] = None
    rewriter_options: Mapping[str, Any] = field(default_factory=dict)
    dataset_options: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.target_rewriter is not None and self.target_rewriter not in REWRITERS:
            raise ValueError(f"unknown target rewriter '{self.target_rewriter}'; known: {sorted(REWRITERS)}")

    def without(self, *names: str) -> "Method":
        self._require(names)
        kept = tuple(term for term in self.terms if term.name not in names)
        return dataclasses.replace(self, name=f"{self.name}-without-{'-'.join(names)}", terms=kept)

    def with_weight(self, name: str, weight: float) -> "Method":
        self._require([name])
        terms = tuple(dataclasses.replace(term, weight=weight) if term.name == name else term
                      for term in self.terms)
        return dataclasses.replace(self, name=f"{self.name}-{name}={weight:g}", terms=terms)

    def extend(self, *terms: Term) -> "Method":
        added_names = [term.name for term in terms]
        clash = [name for index, name in enumerate(added_names)
                 if name in self.term_names or name in added_names[:index]]
        if clash:
            raise ValueError(f"method '{self.name}' already has {clash}; use with_weight to change a weight")
        added = "+".join(term.name for term in terms)
        return dataclasses.replace(self, name=f"{self.name}+{added}", terms=self.terms + tuple(terms))

    @property
    def term_names(self) -> list[str]:
        return [term.name for term in self.terms]

    def step0_signature(self) -> list[str]:
        """What observes step 0: the shared states (SDR's prototype bank, whichever SDR terms
        use it) and the terms with their own `observe`. Step 0 of two methods trains the same
        model; its checkpoint can be shared only if these agree (used by the step-0 cache), so
        "mib+sdr" and "mib+sdr:-attraction" share one step 0 and "mib" has its own."""
        observed = {f"state:{key}" for term in self.terms for key in TERMS[term.name].shared_state}
        observed |= {term.name for term in self.terms if TERMS[term.name].observe is not LossTerm.observe}
        return sorted(observed)

    def for_task(self, task: Task) -> "Method":
        """The method with the reference's task-specific weights applied (MiB: KD 100 on 15-1)."""
        overrides = self.task_weights.get((task.dataset, _steps_name(task)), {})
        method = self
        for name, weight in overrides.items():
            method = dataclasses.replace(method.with_weight(name, weight), name=self.name)
        options = self.dataset_options.get(task.dataset, {})
        terms = tuple(dataclasses.replace(term, options={**term.options, **options[term.name]})
                      if term.name in options else term for term in method.terms)
        return dataclasses.replace(method, terms=terms)

    def _require(self, names) -> None:
        missing = [name for name in names if name not in self.term_names]
        if missing:
            raise ValueError(f"method '{self.name}' has no term {missing}; its terms: {self.term_names}")


STEP0_TERMS = (Term("ce", 1.0),)

_MIB_15_1 = {"unbiased_kd": 100.0}  # MiB#22, MiB#43 and MiBv2's argparser: lambda = 100 on VOC 15-1
# SDR's latent terms with the weights of its preset: prototypes matching 1e-2, attraction and
# repulsion 1e-3, feature sparsification 1e-3.
_SDR_TERMS = (Term("prototype_matching", 1e-2), Term("attraction", 1e-3), Term("repulsion", 1e-3),
              Term("feature_sparsity", 1e-3))
# UCD's contrastive distillation: weight 0.01 (the code divides by 100), temperature 0.07.
_UCD_TERM = Term("contrastive_distillation", 0.01)

METHODS: dict[str, Method] = {
    # Fine-tuning: plain CE on the current labels; old classes are background (the shift).
    "ft": Method("ft", terms=(Term("ce", 1.0),)),
    # Joint training on all classes at once: the upper bound.
    "joint": Method("joint", terms=(Term("ce", 1.0),), joint=True),
    # LwF (Li & Hoiem 2016) as configured in MiB's code: loss_kd = 100.
    "lwf": Method("lwf", terms=(Term("ce", 1.0), Term("kd", 100.0))),
    # LwF-MC (iCaRL's loss without exemplars): icarl_importance = 10.
    "lwf-mc": Method("lwf-mc", terms=(Term("bce", 1.0), Term("bce_distillation", 10.0))),
    # ILT (Michieli & Zanuttigh 2019): loss_kd = 100, loss_de = 100 on the backbone output.
    "ilt": Method("ilt", terms=(Term("ce", 1.0), Term("kd", 100.0), Term("feature_distillation", 100.0))),
    # MiB (Cermelli et al. 2020): unbiased CE + unbiased KD (10; 100 on VOC 15-1) + background init.
    "mib": Method("mib", terms=(Term("unbiased_ce", 1.0), Term("unbiased_kd", 10.0)),
                  classifier_init="background",
                  task_weights={("voc", "15-1"): _MIB_15_1, ("toy", "15-1"): _MIB_15_1}),
    # PLOP (Douillard et al. 2021): CE on entropy-filtered pseudo-labels x adaptive factor + Local POD
    # (feature maps 0.01, logits 5e-4 on VOC; 1e-3 and 1e-5 on ADE20K) + background init.
    "plop": Method("plop", terms=(Term("pseudo_label_ce", 1.0), Term("local_pod", 1.0)),
                   classifier_init="background", target_rewriter="plop_pseudo_labels",
                   dataset_options={"ade": {"local_pod": {"feature_weight": 1e-3, "logits_weight": 1e-5}}}),
    # SDR's own preset (Michieli & Zanuttigh 2021): UNCE + UNKD 100 + its four latent terms,
    # PyTorch's default init for new classifiers (no MiB init). Weights were tuned on the official
    # code, whose bugs the terms here fix: starting values (see each term's docstring).
    "sdr": Method("sdr", terms=(Term("unbiased_ce", 1.0), Term("unbiased_kd", 100.0), *_SDR_TERMS)),
}
# Combinations: a method extended by another's terms (same weights as in each paper).
METHODS["mib+sdr"] = dataclasses.replace(METHODS["mib"].extend(*_SDR_TERMS), name="mib+sdr")
METHODS["mib+ucd"] = dataclasses.replace(METHODS["mib"].extend(_UCD_TERM), name="mib+ucd")
METHODS["plop+ucd"] = dataclasses.replace(METHODS["plop"].extend(_UCD_TERM), name="plop+ucd")
METHODS["mib+sdr+ucd"] = dataclasses.replace(METHODS["mib+sdr"].extend(_UCD_TERM), name="mib+sdr+ucd")


def get_method(name: str) -> Method:
    """A `METHODS` entry, or a variant of one written as a method spec (see `parse_method`)."""
    if ":" in name:
        return parse_method(name)
    if name not in METHODS:
        raise ValueError(f"unknown method '{name}'; known methods: {', '.join(METHODS)} "
                         f"(variants: 'mib:-unbiased_kd', see cslearn.methods.parse_method)")
    return METHODS[name]


SPEC_HELP = ("a method spec is BASE:EDIT,EDIT,... with BASE a METHODS key and each EDIT one of "
             "-term (drop), term=weight (reweight), +term=weight (add), term.option=value, "
             "init=background|default; e.g. 'mib+sdr:-attraction,prototype_matching=0.1'")


def _value(text: str) -> Any:
    """"0.1" -> 0.1, "3" -> 3, "true"/"false" -> bool, "none" -> None, else the text."""
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_method(spec: str) -> Method:
    """A method variant from one string, so that ablations are plain config values (stored in
    checkpoints, compared on resume, used in run names):

        "mib:-unbiased_kd"                                  MiB without unbiased KD
        "mib:init=default"                                  MiB without its classifier init
        "mib+sdr:-attraction,-repulsion,prototype_matching=0.1"
        "mib+ucd:contrastive_distillation.uncertainty=false"
        "ft:+kd=100"                                        fine-tuning plus KD

    An explicit weight or option wins over the base method's per-task weights and per-dataset
    options (a reweighted MiB KD stays as written on 15-1). The variant's name is the spec.
    """
    base_name, _, edits_text = spec.replace(" ", "").partition(":")
    method = get_method(base_name)
    terms = {term.name: term for term in method.terms}  # ordered
    task_weights = {key: dict(weights) for key, weights in method.task_weights.items()}
    dataset_options = {dataset: {term: dict(options) for term, options in per_term.items()}
                       for dataset, per_term in method.dataset_options.items()}
    init = method.classifier_init
    for edit in filter(None, edits_text.split(",")):
        key, has_value, value = edit.partition("=")
        try:
            if edit.startswith("-") and not has_value:
                method._require([key[1:]])
                del terms[key[1:]]
                for weights in task_weights.values():
                    weights.pop(key[1:], None)
            elif key == "init":
                if value not in ("background", "default"):
                    raise ValueError(f"init is 'background' or 'default', not '{value}'")
                init = value
            elif key.startswith("+") and has_value:
                if key[1:] in terms:
                    raise ValueError(f"method '{base_name}' already has '{key[1:]}'; reweight it with {key[1:]}={value}")
                terms[key[1:]] = Term(key[1:], float(value))
            elif "." in key and has_value:
                name, option = key.split(".", 1)
                method._require([name])
                terms[name] = dataclasses.replace(terms[name], options={**terms[name].options, option: _value(value)})
                for per_term in dataset_options.values():
                    per_term.get(name, {}).pop(option, None)
                TERMS[name](**dict(terms[name].options))  # unknown option or bad value: fail now
            elif has_value:
                method._require([key])
                terms[key] = dataclasses.replace(terms[key], weight=float(value))
                for weights in task_weights.values():
                    weights.pop(key, None)
            else:
                raise ValueError(f"cannot read '{edit}'")
        except (ValueError, TypeError, KeyError) as error:
            raise ValueError(f"bad method spec '{spec}' at '{edit}': {error}. {SPEC_HELP}") from None
    if not terms:
        raise ValueError(f"method spec '{spec}' removes every loss term; keep at least one. {SPEC_HELP}")
    return dataclasses.replace(method, name=spec.replace(" ", ""), terms=tuple(terms.values()), classifier_init=init,
                               task_weights=task_weights, dataset_options=dataset_options)


def objective_for_step(method: Method, step: int) -> Objective:
    """Step 0 (and joint training) trains with plain CE while the method's terms only observe;
    later steps use the method's terms and target rewriter."""
    if step == 0 or method.joint:
        return Objective(STEP0_TERMS, observers=method.terms)
    return Objective(method.terms, rewriter=method.target_rewriter, rewriter_options=method.rewriter_options)


def _steps_name(task: Task) -> str:
    """"15-1" for any task whose steps are 16 classes then five single classes, etc."""
    sizes = task.classes_per_step
    base = sizes[0] - 1
    if len(sizes) == 1:
        return "offline"
    if len(set(sizes[1:])) == 1:
        return f"{base}-{sizes[1]}"
    return "-".join([str(base)] + [str(size) for size in sizes[1:]])
