"""Config checks that JSON schema cannot express, run right after the schema validated the config.

``bounded_and_finite`` runs first, before the schema too: a config that expands past a size
budget (YAML aliases) or holds a NaN or an infinity is refused naming the key path.
Each other check is a small function of the whole (validated) config that raises ``ConfigError``
naming the key path, the value and what to do; ``CHECKS`` lists them in order (later checks may
rely on earlier ones: a training run's data set exists before its size is looked up). The
workflow calls ``check_config`` while loading (workflow/rules/common.smk), so a config that fails
stops the run before any job starts. Kept free of heavy imports: Snakemake imports it on every load.
"""

import math
import re

from kdpipe import architectures, methods, plan, schedule
from kdpipe.data.sources import CIFAR, SYNTHETIC_NUM_CLASSES

# The schema's $defs/safe_name (a test keeps the two equal): applied here to the names the plan
# builds from config values (run names), which the schema never sees.
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
SAFE_NAME_MAX = 64
# A run name adds a role or method, architectures and a seed to the names above.
RUN_NAME_MAX = 160


class ConfigError(ValueError):
    """The config asks for something the pipeline cannot do; the message names the key and value."""


# A kdpipe config holds a few hundred values. YAML aliases (*name) repeat what their anchor
# (&name) holds wherever they appear, so a small file can expand to billions of values; these
# bounds refuse that before the schema (whose messages print the whole expanded config) sees it.
MAX_NODES = 100_000
MAX_DEPTH = 32


def key_path(path: tuple) -> str:
    """``("classify", "pairs", 0, "alpha")`` as ``classify.pairs[0].alpha``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _yaml_word(x: float) -> str:
    return ".nan" if math.isnan(x) else (".inf" if x > 0 else "-.inf")


def bounded_and_finite(config, what: str = "config") -> None:
    """Refuse ``config`` when it expands past MAX_NODES values or MAX_DEPTH levels, or holds a
    NaN or an infinity, naming the key path. Every appearance of a shared (aliased) object counts,
    and the walk stops at the first problem: bounded time and memory, whatever the input."""
    count = 0
    stack = [(config, ())]
    while stack:
        node, path = stack.pop()
        if not isinstance(node, (dict, list, tuple)):
            # JSON-schema ranges compare false for NaN, and an infinity passes every minimum.
            if isinstance(node, float) and not math.isfinite(node):
                raise ConfigError(f"{key_path(path)[:200]}: {_yaml_word(node)} is not a finite number; "
                                  "give a finite value")
            continue
        if len(path) >= MAX_DEPTH:
            raise ConfigError(f"{what} nests deeper than {MAX_DEPTH} levels at {key_path(path)[:200]}: a kdpipe config "
                              "is a few levels deep; remove the nesting (or the YAML alias that refers to itself)")
        count += len(node)
        if count > MAX_NODES:
            raise ConfigError(f"{what} expands to more than {MAX_NODES} values (at {key_path(path)[:200]}): a kdpipe "
                              "config holds a few hundred; YAML aliases (*name) repeat what their anchor holds "
                              "wherever they appear, so remove the aliases that multiply it")
        items = node.items() if isinstance(node, dict) else enumerate(node)
        stack.extend(reversed([(v, (*path, k)) for k, v in items]))  # document order: the first problem is named


def _trainers(config: dict):
    """(key, block) of the config blocks that train on a data set under ``datasets``."""
    return [("classify", config["classify"]), ("self_distill", config["self_distill"])]


def datasets_are_defined(config: dict) -> None:
    defined = sorted(config["datasets"])
    for key, block in _trainers(config):
        if block["dataset"] not in config["datasets"]:
            raise ConfigError(
                f"{key}.dataset: {block['dataset']!r} is not defined under `datasets` (defined: "
                f"{', '.join(defined)}); add it there or use one of those"
            )


def autoencoder_data_has_its_own_name(config: dict) -> None:
    name = config["autoencoder"]["data"]["name"]
    if name in config["datasets"]:
        raise ConfigError(
            f"autoencoder.data.name: {name!r} is also a data set under `datasets`, and both would be prepared "
            f"into data/prepared/{name}/; give the autoencoder's data a name of its own"
        )


def pairs_are_unique(config: dict) -> None:
    seen: dict[tuple[str, str], int] = {}
    for i, pair in enumerate(config["classify"]["pairs"]):
        key = (pair["teacher"], pair["student"])
        if key in seen:
            raise ConfigError(
                f"classify.pairs: items {seen[key]} and {i} are the same pair, teacher {key[0]} and student "
                f"{key[1]} (a pair's runs, figures and tables are named by its teacher and student only, "
                "whatever its temperature or alpha); keep one of them, and compare settings in separate presets"
            )
        seen[key] = i


def train_class_sizes(entry: dict) -> list[int] | None:
    """Training images per class of a data set entry, in label order, when the config alone tells."""
    if entry["source"] in CIFAR:
        spec = CIFAR[entry["source"]]
        return [spec["train_per_class"]] * spec["num_classes"]
    if entry["source"] == "synthetic":
        # kdpipe.data.synthetic deals labels round-robin: class c gets every num_classes-th image.
        n, c = entry["num_train"], entry.get("num_classes", SYNTHETIC_NUM_CLASSES)
        return [size for size in (n // c + (1 if k < n % c else 0) for k in range(c)) if size]
    return None


def _stratified_max(have: list[int]) -> int:
    """The largest subset kdpipe.training.classify.stratified_subset can draw from classes of these sizes
    (every class gives size // K images, the first size % K classes one more)."""
    low = min(have)
    extra = next((i for i, n in enumerate(have) if n <= low), len(have))
    return len(have) * low + extra


def train_subset_fits(config: dict) -> None:
    for key, block in _trainers(config):
        size = block.get("train_subset")
        name = block["dataset"]
        have = train_class_sizes(config["datasets"][name])
        if not size or have is None:
            continue
        largest = _stratified_max(have)
        if size > largest:
            k = len(have)
            per_class = f"{have[0]} in each" if len(set(have)) == 1 else f"{min(have)} to {max(have)} in each"
            raise ConfigError(
                f"{key}.train_subset: {size} is more than data set {name!r} can give: a stratified subset of {size} "
                f"takes {-(-size // k)} images from each of its {k} classes, and it has {per_class} "
                f"({sum(have)} training images in all); use at most {largest}, or null for all of them"
            )


def pair_settings_name_listed_methods(config: dict) -> None:
    """A pair's method_params for a method that classify.methods does not run is a typo or a leftover."""
    c = config["classify"]
    for i, pair in enumerate(c["pairs"]):
        for method in pair.get("method_params", {}):
            if method not in c["methods"]:
                raise ConfigError(f"classify.pairs[{i}].method_params.{method}: {method} is not in classify.methods "
                                  f"({', '.join(c['methods'])}); add it there or remove these settings")


def untaught_runs_agree(config: dict) -> None:
    """A method without a teacher runs once per student architecture and seed, whichever pairs list
    that student: pairs that give it different settings would ask one run for two configs."""
    c = config["classify"]
    for method in c["methods"]:
        if methods.get(method).needs_teacher:
            continue
        seen: dict[str, tuple[int, dict]] = {}
        for i, pair in enumerate(c["pairs"]):
            params = methods.resolve_params(method, c.get("method_params"), pair.get("method_params"))
            first = seen.setdefault(pair["student"], (i, params))
            if first[1] != params:
                raise ConfigError(
                    f"classify.pairs[{i}].method_params.{method}: {method} trains {pair['student']} once for every "
                    f"pair, but pairs[{first[0]}] sets {first[1]} and pairs[{i}] {params}; give both the same "
                    f"settings (under classify.method_params.{method})")


def some_method_learns_from_the_teacher(config: dict) -> None:
    """Pairs are teacher→student comparisons: with no method that learns from a teacher there is no
    teacher to train and no pair for the tables to show."""
    if not any(methods.get(m).needs_teacher for m in config["classify"]["methods"]):
        taught = [name for name, m in methods.METHODS.items() if m.needs_teacher]
        raise ConfigError(f"classify.methods: none of {config['classify']['methods']} learns from a teacher; "
                          f"add at least one of {', '.join(taught)}")


def run_names_are_safe(config: dict) -> None:
    """Every run and data set name the plan builds is one safe path component (defence in depth)."""
    for (family, run), cfg in plan.training_runs(config).items():
        for what, name, limit in (("run", run, RUN_NAME_MAX), ("data set", cfg["dataset"], SAFE_NAME_MAX)):
            if not SAFE_NAME.match(name) or len(name) > limit:
                raise ConfigError(
                    f"{family}: the {what} name {name!r} built from the config is not a safe file name "
                    f"(letters, digits, '_' and '-', at most {limit} characters); rename what it is made of"
                )


def methods_can_pair(config: dict) -> None:
    """A method that needs matching feature maps (``Method.check_pair``: attention transfer pools by an
    integer factor only) is asked about every pair's registered stage shapes here, so an impossible
    pair stops the run before its teacher trains, not when its student starts."""
    c = config["classify"]
    for i, pair in enumerate(c["pairs"]):
        student, teacher = architectures.get(pair["student"]), architectures.get(pair["teacher"])
        for method in c["methods"]:
            params = methods.resolve_params(method, c.get("method_params"), pair.get("method_params"))
            refusal = methods.pair_refusal(method, teacher.name, student.name, student.stage_shapes,
                                           teacher.stage_shapes, params,
                                           shapes_from=" (stage shapes from kdpipe.architectures, 32x32 images)")
            if refusal:
                raise ConfigError(f"classify.pairs[{i}]: {refusal}")


def architectures_have_epoch_times(config: dict) -> None:
    """The schedule orders jobs by each architecture's expected epoch time: one the registry does not
    know would be guessed, so it is refused here rather than given another architecture's time."""
    for i, pair in enumerate(config["classify"]["pairs"]):
        for role in ("teacher", "student"):
            arch = architectures.get(pair[role])
            if arch.epoch_s is None:
                raise ConfigError(
                    f"classify.pairs[{i}].{role}: {arch.name} has no expected epoch time; add epoch_s to its "
                    f"entry in kdpipe.architectures (seconds per epoch of 50,000 CIFAR images on one GPU, "
                    f"eager fp32; an estimate labelled as one will do)")


def self_distill_has_epoch_times(config: dict) -> None:
    """Likewise for the multi-exit runs: each method's time and the architecture's factor are in
    kdpipe.schedule's tables, never borrowed from another method or architecture."""
    arch = config["self_distill"]["arch"]
    if arch not in schedule.MULTI_EXIT_FACTOR:
        raise ConfigError(
            f"self_distill.arch: {arch} has no expected epoch time; add it to MULTI_EXIT_FACTOR in kdpipe.schedule "
            f"(its seconds per epoch relative to the multi-exit ResNet-18; an estimate labelled as one will do)")
    for method in plan.SELF_DISTILL_METHODS:
        if method not in schedule.SELF_DISTILL_EPOCH_S:
            raise ConfigError(
                f"self_distill: method {method} has no expected epoch time; add it to SELF_DISTILL_EPOCH_S in "
                f"kdpipe.schedule (seconds per epoch of the multi-exit ResNet-18 at width 64 on one GPU, eager "
                f"fp32; an estimate labelled as one will do)")


def published_teachers_are_provided(config: dict) -> None:
    """Each classify.published_teachers entry names a defined source that provides that architecture."""
    sources = config.get("teacher_sources") or {}
    for arch, source in (config["classify"].get("published_teachers") or {}).items():
        key = f"classify.published_teachers.{arch}"
        if source not in sources:
            raise ConfigError(f"{key}: {source!r} is not defined under `teacher_sources` (defined: "
                              f"{', '.join(sorted(sources)) or 'none'}); define it there or name one of those")
        if arch not in sources[source]["archs"]:
            raise ConfigError(f"{key}: teacher source {source!r} does not provide {arch} (it provides "
                              f"{', '.join(sources[source]['archs'])}); remove this key to train {arch} instead")


def _value_problem(value, schema: dict) -> str | None:
    """Why ``value`` does not fit a setting's JSON-schema fragment (None when it does)."""
    from jsonschema.validators import validator_for  # Snakemake's own validator library

    error = next(iter(validator_for(schema)(schema).iter_errors(value)), None)
    return None if error is None else error.message


def sweeps_are_valid(config: dict) -> None:
    """Each sweep names a setting of a method that classify.methods runs (or the transfer set), and
    every value is one that setting accepts: refused now, naming the key, not when a point trains."""
    c = config["classify"]
    for name, entry in (c.get("sweeps") or {}).items():
        key = f"classify.sweeps.{name}"
        setting = entry["setting"]
        if setting == plan.TRANSFER_SET:
            for method in entry.get("methods") or []:
                if method not in c["methods"]:
                    raise ConfigError(f"{key}.methods: {method!r} is not in classify.methods ({', '.join(c['methods'])}); "
                                      "a sweep draws methods the config runs: add it there or remove it here")
            have = train_class_sizes(config["datasets"][c["dataset"]])
            largest = _stratified_max(have) if have else None
            for i, value in enumerate(entry["values"]):
                if not isinstance(value, int) or value < 10 or (largest and value > largest):
                    limit = f"10 to {largest}" if largest else "at least 10"
                    raise ConfigError(f"{key}.values[{i}]: {value!r} is not a transfer-set size data set "
                                      f"{c['dataset']!r} can give (a whole number of images, {limit})")
            continue
        method, param = setting.split(".", 1)
        if method not in methods.METHODS:
            raise ConfigError(f"{key}.setting: {setting!r} names no registered method ({', '.join(methods.METHODS)}); "
                              f"write <method>.<setting> or {plan.TRANSFER_SET}")
        if method not in c["methods"]:
            raise ConfigError(f"{key}.setting: {setting!r} sweeps {method}, which classify.methods does not run "
                              f"({', '.join(c['methods'])}); add {method} there or sweep another method")
        known = methods.get(method).params
        if param not in known:
            has = ", ".join(known) or "none"
            raise ConfigError(f"{key}.setting: {method} has no setting {param!r} (its settings: {has})")
        if "methods" in entry:
            raise ConfigError(f"{key}.methods: only a {plan.TRANSFER_SET} sweep lists methods; a sweep of {setting} "
                              f"draws {method}, against the student alone: remove this key")
        for i, value in enumerate(entry["values"]):
            problem = _value_problem(value, known[param].schema)
            if problem:
                raise ConfigError(f"{key}.values[{i}]: {problem} ({setting}: {known[param].help})")


CHECKS = [
    datasets_are_defined,
    autoencoder_data_has_its_own_name,
    pairs_are_unique,
    train_subset_fits,
    pair_settings_name_listed_methods,
    untaught_runs_agree,
    sweeps_are_valid,
    some_method_learns_from_the_teacher,
    run_names_are_safe,
    published_teachers_are_provided,
    methods_can_pair,
    architectures_have_epoch_times,
    self_distill_has_epoch_times,
]


def check_config(config: dict) -> None:
    """Run every check on a schema-validated config; raise ConfigError at the first that fails."""
    bounded_and_finite(config)  # run before the schema too (config_schema.validate_config, common.smk)
    for check in CHECKS:
        check(config)
