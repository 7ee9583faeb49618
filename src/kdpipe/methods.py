"""The distillation methods, each described once: the registry the plan, the classifier family, the
config schema, the tables, figures and report read.

A method is one ``Method`` entry: its name (the word in run names and in ``classify.methods``), the
label and colour the report uses, whether it needs a teacher, which stage outputs it reads, its
hyper-parameters (default, JSON-schema fragment, help), ``step``, the one line that calls its loss (a
pure function in ``kdpipe.losses``, named there and nowhere else) with what the classifier computed,
the published CIFAR-100 numbers of its student per (teacher, student) pair to print beside ours (the
teacher's and the student alone's are the architecture's: kdpipe.architectures), and how many
students it trains. Adding a method
is one entry here plus its loss and tests (docs/methods.md: "Adding a method").

This module does not import torch (the Snakefile reads it when the DAG loads); a step imports
``kdpipe.losses`` when it first runs.

The teacher is a role, not a method: it trains alone with cross-entropy, once per architecture and
seed, and every method that ``needs_teacher`` learns from it.
"""

from dataclasses import dataclass, field
from typing import Any, Callable

from kdpipe.feature_maps import pooling_factors


@dataclass(frozen=True)
class Param:
    """One hyper-parameter: its default, its JSON-schema fragment (type, range) and what it means."""

    default: Any
    schema: dict
    help: str


@dataclass
class Forward:
    """What the classifier computed for one batch, for a method's ``step``.

    ``features`` / ``teacher_features`` are the three stage outputs (only when the method asks for
    them); ``peers`` the logits of students 2..n (mutual learning); ``modules`` the run's own
    trainable extras (FitNets' regressor); ``epoch`` is 0-based.
    """

    logits: Any
    targets: Any
    features: list | None = None
    teacher_logits: Any = None
    teacher_features: list | None = None
    peers: list = field(default_factory=list)
    modules: Any = None
    epoch: int = 0


@dataclass(frozen=True)
class Method:
    name: str
    label: str
    colour: str  # matplotlib colour of its bars and curves
    formula: str  # the loss in one line, for the report
    step: Callable[[Forward, dict], tuple]  # (forward, resolved params) -> (total, terms)
    needs_teacher: bool = False
    features: tuple[str, ...] = ()  # "student" and/or "teacher": stage outputs the step reads
    params: dict[str, Param] = field(default_factory=dict)
    students: int = 1  # students one run trains together (mutual learning: 2)
    extra_modules: Callable | None = None  # (student shapes, teacher shapes, params) -> {name: nn.Module}
    # What of the (0-based) epoch its loss reads, as a function (epoch, params) -> value: a
    # CUDA-graphed step, which freezes every Python number at capture, captures again when it
    # changes. None (declared nothing): captured again every epoch, safe whatever the loss reads.
    # ``epoch_independent`` says the loss reads no epoch (captured once per lr). A test checks
    # every entry's claim on real losses at several epochs (tests/test_capturable.py).
    epoch_key: Callable[[int, dict], Any] | None = None
    # (student shapes, teacher shapes, params) -> None, or why this teacher and student cannot be
    # paired by this method; each shape a stage's (channels, height, width). Torch-free: the config
    # check asks it of the registered shapes (kdpipe.architectures) before any job starts, and the
    # classifier family asks again of the built models' maps.
    check_pair: Callable | None = None
    references: dict = field(default_factory=dict)  # (teacher, student) -> published CIFAR-100 top-1 %
    reference_source: str = ""
    # The epoch the source says its numbers are from: "best epoch", "last epoch" or "not stated"
    # (kdpipe.references.EPOCH_CONVENTIONS); what the source states, never what it probably did.
    reference_epoch: str = ""
    # A control: no teacher, but what a teacher's gain might be no more than (label smoothing). The
    # tables and report read every method that needs a teacher against it as well as against BASELINE.
    control: bool = False

    def defaults(self) -> dict:
        return {k: p.default for k, p in self.params.items()}


def _losses():
    from kdpipe import losses  # torch: imported when a step first runs, not when the DAG loads

    return losses


TEMPERATURE = {"type": "number", "exclusiveMinimum": 0}
WEIGHT = {"type": "number", "minimum": 0}
UNIT = {"type": "number", "minimum": 0, "maximum": 1}
# RepDistiller's README does not say which epoch (its train_student.py prints the best test accuracy
# and saves the last model); mdistiller's tables report the best epoch (best_acc), mean of 5 runs.
REPDISTILLER = "RepDistiller README (CIFAR-100, 240 epochs)"
MDISTILLER = "mdistiller README (CIFAR-100, 240 epochs, mean of 5 runs)"


def epoch_independent(epoch: int, params: dict) -> None:
    """``epoch_key`` of a loss that reads nothing of the epoch: one key for every epoch."""
    return None


def _attention_pair(student_shapes, teacher_shapes, params):
    for i, (s, t) in enumerate(zip(student_shapes, teacher_shapes), start=1):
        if pooling_factors(s[1:], t[1:]) is None:
            return (f"stage {i} maps are {'x'.join(map(str, s[1:]))} (student) and {'x'.join(map(str, t[1:]))} "
                    "(teacher), and attention transfer pools the larger by an integer factor only")
    return None


def _fitnet_modules(student_shapes, teacher_shapes, params):
    from kdpipe.models.regressor import FeatureRegressor

    i = params["stage"] - 1
    return {"regressor": FeatureRegressor(student_shapes[i], teacher_shapes[i])}


def _fitnet_step(o: Forward, p: dict):
    i = p["stage"] - 1
    return _losses().fitnet(o.logits, o.targets, o.modules["regressor"](o.features[i]), o.teacher_features[i], p["beta"])


def _dkd_warmup(epoch: int, p: dict) -> float:
    # mdistiller counts epochs from 1: w = min(epoch / warmup, 1) reaches 1 at epoch `warmup`.
    return min((epoch + 1) / p["warmup"], 1.0) if p["warmup"] > 0 else 1.0


def _dkd_step(o: Forward, p: dict):
    w = _dkd_warmup(o.epoch, p)
    return _losses().dkd(o.logits, o.teacher_logits, o.targets, p["temperature"], p["alpha"], p["beta"], warmup_weight=w)


TEACHER = {"name": "teacher", "label": "teacher", "colour": "#4d4d4d"}
BASELINE = "alone"  # the method every other one is compared with (paired by seed) in the tables and report

METHODS: dict[str, Method] = {m.name: m for m in [
    Method(
        "alone", "student alone", "#1f77b4", "CE(student, y): the baseline every method is read against",
        step=lambda o, p: _losses().cross_entropy(o.logits, o.targets),
        epoch_key=epoch_independent),  # published numbers: the student architecture's "alone"
    Method(  # no published CIFAR-100 number for these students (Yuan et al. 2020 trained other networks)
        "label_smooth", "label smoothing", "#7f7f7f",
        "(1-ε)·CE + ε·CE(student, uniform): no teacher; KD's gain may be no more (Yuan et al. 2020)",
        step=lambda o, p: _losses().label_smoothing(o.logits, o.targets, p["epsilon"]),
        epoch_key=epoch_independent, control=True,
        params={"epsilon": Param(0.1, {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                                 "label smoothing: 1 - epsilon on the true class, epsilon spread over all classes")}),
    Method(
        "kd_soft", "KD soft", "#d62728", "(1-a)·CE + a·T²·KL(teacher_T ‖ student_T)",
        needs_teacher=True,
        step=lambda o, p: _losses().kd_soft(o.logits, o.teacher_logits, o.targets, p["temperature"], p["alpha"]),
        epoch_key=epoch_independent,
        params={"temperature": Param(4, TEMPERATURE, "soft targets: softmax(logits / T); the KL is scaled by T²"),
                "alpha": Param(0.9, UNIT, "weight of the KL term; 1 - alpha weights CE with the labels")},
        references={("resnet56", "resnet20"): 70.66, ("resnet110", "resnet32"): 73.08,
                    ("resnet32x4", "resnet8x4"): 73.33, ("wrn_40_2", "wrn_16_2"): 74.92},
        reference_source=REPDISTILLER, reference_epoch="not stated"),
    Method(
        "kd_hard", "KD hard", "#ff7f0e", "(1-a)·CE(labels) + a·CE(teacher's argmax)",
        needs_teacher=True,
        step=lambda o, p: _losses().kd_hard(o.logits, o.teacher_logits, o.targets, p["alpha"]),
        epoch_key=epoch_independent,
        params={"alpha": Param(0.9, UNIT, "weight of CE with the teacher's argmax; 1.0 = teacher labels only")}),
    Method(
        "dkd", "DKD", "#9467bd", "CE + w·(a·TCKD + b·NCKD), w = min(epoch / warmup, 1)",
        needs_teacher=True, step=_dkd_step, epoch_key=_dkd_warmup,
        params={"temperature": Param(4, TEMPERATURE, "T of both KL terms (each scaled by T²)"),
                "alpha": Param(1.0, WEIGHT, "weight of TCKD (target vs rest)"),
                "beta": Param(8.0, WEIGHT, "weight of NCKD (among the non-target classes)"),
                "warmup": Param(20, {"type": "integer", "minimum": 0},
                                "epochs over which the distillation weight ramps up to 1 (0: none)")},
        references={("resnet56", "resnet20"): 71.97, ("resnet32x4", "resnet8x4"): 76.32,
                    ("wrn_40_2", "wrn_16_2"): 76.24},
        reference_source=MDISTILLER, reference_epoch="best epoch"),
    Method(
        "fitnet", "FitNets", "#2ca02c", "CE + b·MSE(regressor(f_s), f_t), one stage",
        needs_teacher=True, features=("student", "teacher"), step=_fitnet_step,
        extra_modules=_fitnet_modules, epoch_key=epoch_independent,
        params={"beta": Param(100.0, WEIGHT, "weight of the hint (mean squared difference)"),
                "stage": Param(2, {"type": "integer", "minimum": 1, "maximum": 3},
                               "stage whose output is the hint (RepDistiller's hint_layer 2: the middle stage)")},
        references={("resnet56", "resnet20"): 69.21, ("resnet32x4", "resnet8x4"): 73.50,
                    ("wrn_40_2", "wrn_16_2"): 73.58},
        reference_source=REPDISTILLER, reference_epoch="not stated"),
    Method(
        "at", "attention transfer", "#8c564b", "CE + b·Σ_stages mean((a_s − a_t)²), a = normalise(mean_c f^p)",
        needs_teacher=True, features=("student", "teacher"),
        step=lambda o, p: _losses().attention(o.logits, o.targets, o.features, o.teacher_features, p["beta"], p["p"]),
        epoch_key=epoch_independent, check_pair=_attention_pair,
        params={"beta": Param(1000.0, WEIGHT, "weight of the attention terms"),
                "p": Param(2, {"type": "number", "exclusiveMinimum": 0}, "attention = mean over channels of f^p")},
        references={("resnet56", "resnet20"): 70.55, ("resnet32x4", "resnet8x4"): 73.44,
                    ("wrn_40_2", "wrn_16_2"): 74.08},
        reference_source=REPDISTILLER, reference_epoch="not stated"),
    Method(
        "dml", "mutual learning", "#17becf", "two students, each CE + KL(p_peer ‖ p_self), no teacher",
        students=2, step=lambda o, p: _losses().dml([o.logits, *o.peers], o.targets),
        epoch_key=epoch_independent,
        references={("resnet32", "resnet32"): 71.19},
        reference_source="Zhang et al. 2018, Deep Mutual Learning (CIFAR-100, resnet32 with a resnet32 peer; alone 68.99)",
        reference_epoch="not stated"),
]}


def get(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}") from None


def label(name: str) -> str:
    return TEACHER["label"] if name == "teacher" else get(name).label


def colour(name: str) -> str:
    return TEACHER["colour"] if name == "teacher" else get(name).colour


def order() -> list[str]:
    """Rows in tables and bars in charts: the teacher, then the methods in registry order."""
    return ["teacher", *METHODS]


def controls() -> list[str]:
    """The control methods, in registry order (``Method.control``)."""
    return [name for name, m in METHODS.items() if m.control]


def compared_with(method: str) -> list[str]:
    """What a method's students are read against, paired by seed: the student alone (BASELINE), and
    for a method that needs a teacher also every control; the teacher and the baseline against nothing."""
    if method in ("teacher", BASELINE):
        return []
    return [BASELINE, *(controls() if get(method).needs_teacher else [])]


def pair_refusal(method: str, teacher: str, student: str, student_shapes, teacher_shapes, params: dict,
                 shapes_from: str = "") -> str | None:
    """Why ``method`` cannot pair this teacher and student (its ``check_pair`` on their stage shapes),
    as the one sentence the config check and the job both print, or None when it can. ``shapes_from``
    says where the shapes came from when they are not the built models' own."""
    check = get(method).check_pair
    problem = check(student_shapes, teacher_shapes, params) if check else None
    if not problem:
        return None
    return (f"method {method!r} cannot pair teacher {teacher} with student {student}: {problem}{shapes_from}; "
            f"drop this pair from classify.pairs or {method} from classify.methods")


def score_suffix(student: int) -> str:
    """Evaluation keys of student k (1-based) of a run: top1, top1_s2, top1_s3, ..."""
    return "" if student == 1 else f"_s{student}"


def reference(method: str, teacher: str, student: str) -> float | None:
    """The published CIFAR-100 top-1 for this method and pair (mutual learning: the student's own arch)."""
    m = get(method)
    key = (student, student) if not m.needs_teacher and m.students > 1 else (teacher, student)
    return m.references.get(key)


def resolve_params(method: str, *layers: dict) -> dict:
    """The method's defaults overridden by each layer's entry for it (config, then the pair)."""
    params = get(method).defaults()
    for layer in layers:
        params.update((layer or {}).get(method, {}))
    return params


def schema_fragment() -> dict:
    """JSON schema of ``classify.methods`` and ``classify.method_params`` (and a pair's
    ``method_params``), generated from the registry: an unknown method or setting names its key."""
    params = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            name: {
                "description": f"{m.label}: {m.formula}",
                "type": "object",
                "additionalProperties": False,
                "properties": {k: {**p.schema, "description": f"{p.help} (default {p.default})"}
                               for k, p in m.params.items()},
            }
            for name, m in METHODS.items()
        },
    }
    return {
        "methods": {
            "description": "the distillation methods to run, for every pair and seed (kdpipe.methods)",
            "type": "array", "minItems": 1, "uniqueItems": True, "items": {"enum": list(METHODS)},
        },
        "method_params": {**params, "description": "per-method settings; a pair's method_params override them"},
    }
