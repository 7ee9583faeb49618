"""Validate one run's config (what `kdpipe train --run-config` gets) before any work.

The workflow builds run configs from a validated config (kdpipe.plan), but a run config given by
hand reaches the trainer directly: an unknown method would train plain cross-entropy, a negative
batch size zero steps. This schema is built from the registries (methods, architectures,
families) and uses the config schema's ranges (tests keep the recipe equal to
workflow/schemas/config.schema.yaml and check every run config the plan makes passes), so a run
config is refused with one line naming its key.
"""

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from kdpipe import methods, plan
from kdpipe.config_checks import RUN_NAME_MAX, SAFE_NAME, SAFE_NAME_MAX, ConfigError, bounded_and_finite, key_path
from kdpipe.errors import InputError


class RunConfigError(InputError):
    """A run config the trainer cannot run; the message names the key."""


def _name(max_length: int) -> dict:
    return {"type": "string", "pattern": SAFE_NAME.pattern, "maxLength": max_length}


ALPHA = {"type": "number", "minimum": 0, "maximum": 1}
# workflow/schemas/config.schema.yaml's $defs/recipe (without defaults): a test keeps them equal.
RECIPE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["epochs", "batch_size", "lr"],
    "properties": {
        "cuda_graphs": {"enum": ["auto", "on", "off", True, False]},
        "precision": {"enum": ["auto", "bf16", "fp32"]},
        "deterministic": {"type": "boolean"},
        "epochs": {"type": "integer", "minimum": 1},
        "batch_size": {"type": "integer", "minimum": 1},
        "lr": {"type": "number", "exclusiveMinimum": 0},
        "optimizer": {"enum": ["sgd", "adam"]},
        "betas": {"type": "array", "items": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
                  "minItems": 2, "maxItems": 2},
        "momentum": {"type": "number", "minimum": 0, "maximum": 1},
        "weight_decay": {"type": "number", "minimum": 0},
        "lr_milestones": {"type": "array", "items": {"type": "integer", "minimum": 1}},
        "lr_gamma": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
        "nesterov": {"type": "boolean"},
    },
}
CIFAR_SOURCES = ["cifar10", "cifar100", "synthetic"]  # the config schema's datasets.*.source
AE_SOURCES = ["official", "pix2pix", "synthetic"]  # and autoencoder.data.source


def _common(sources: list[str]) -> dict:
    """Keys every family's run config has."""
    return {
        "family": {"type": "string"},
        "run": _name(RUN_NAME_MAX),
        "method": {"type": "string"},
        "dataset": _name(SAFE_NAME_MAX),
        "dataset_source": {"enum": sources},
        "device": {"enum": ["auto", "cpu", "cuda"]},
        "augment": {"type": "boolean"},
        "seed": {"type": "integer", "minimum": 0},
        "train": RECIPE,
    }


def _object(properties: dict, required: list[str]) -> dict:
    return {"type": "object", "additionalProperties": False, "required": required, "properties": properties}


SUBSET = {"type": ["integer", "null"], "minimum": 10}
# An imported teacher's source (kdpipe.plan.imported_teacher); the member path as the config schema allows.
IMPORT = {"type": "object", "additionalProperties": False, "required": ["source", "url", "member"],
          "properties": {"source": _name(SAFE_NAME_MAX), "url": {"type": "string", "minLength": 1},
                         "member": {"type": "string", "pattern": r"^[A-Za-z0-9_][A-Za-z0-9_./-]*$",
                                    "not": {"pattern": r"\.\."}}}}


def family_schemas() -> dict[str, dict]:
    """The run-config schema of each family, from the registries."""
    from kdpipe.architectures import ARCHITECTURES
    from kdpipe.models.multi_exit import MULTI_EXIT_RESNETS

    arch = {"enum": sorted(ARCHITECTURES)}
    base = ["family", "run", "method", "dataset", "dataset_source", "device", "augment", "seed", "train"]
    classify = _object({**_common(CIFAR_SOURCES), "method": {"enum": ["teacher", *methods.METHODS]},
                        "role": {"enum": ["teacher", "student"]}, "arch": arch, "train_subset": SUBSET,
                        "method_params": {"type": "object"}, "teacher": arch, "teacher_run": _name(RUN_NAME_MAX),
                        "import": IMPORT},
                       [*base, "role", "arch", "train_subset"])
    self_distill = _object(
        {**_common(CIFAR_SOURCES), "method": {"enum": list(plan.SELF_DISTILL_METHODS)},
         "arch": {"enum": sorted(MULTI_EXIT_RESNETS)}, "width": {"type": "integer", "minimum": 1},
         "train_subset": SUBSET,
         "self_distill": _object({"temperature": {"type": "number", "exclusiveMinimum": 0}, "alpha": ALPHA,
                                  "lam": {"type": "number", "minimum": 0}, "detach_teacher": {"type": "boolean"}},
                                 ["temperature", "alpha", "lam", "detach_teacher"])},
        [*base, "arch", "width"])
    # BYOT's run needs its settings; the baseline has none.
    self_distill["if"] = {"properties": {"method": {"const": "self_distill"}}}
    self_distill["then"] = {"required": ["self_distill"]}
    autoencoder = _object(
        {**_common(AE_SOURCES), "method": _name(SAFE_NAME_MAX), "width": {"type": "integer", "minimum": 1},
         "variant": _object({"name": _name(SAFE_NAME_MAX), "order": {"type": "integer", "minimum": 0},
                             "pairs": {"type": "array", "items": {"enum": [[1, 4], [2, 3], [3, 2], [4, 1]]}},
                             "adapter": {"enum": ["maxpool", "conv", None]}, "alpha": ALPHA,
                             "match": {"enum": ["formula", "prose", "both"]}, "norm": {"enum": ["l1", "l2"]}},
                            ["name", "pairs", "adapter", "alpha", "match", "norm"])},
        [*base, "width", "variant"])
    return {"classify": classify, "self_distill": self_distill, "autoencoder": autoencoder}


def _method_params_schema(method: str) -> dict:
    """A classifier method's settings: the registry's schema, every one of them given (the trainer
    reads them as the plan resolved them, defaults included)."""
    m = methods.get(method)
    return _object({k: p.schema for k, p in m.params.items()}, list(m.params))


def _refuse(error, *prefix) -> None:
    where = key_path((*prefix, *error.absolute_path))
    message = error.message if len(error.message) <= 300 else error.message[:300] + "..."
    raise RunConfigError(f"run config: {where}: {message}")


def validate_run_config(cfg, teacher_given: bool | None = None) -> None:
    """Raise RunConfigError naming the key when ``cfg`` is not a run config the trainer can run.
    ``teacher_given``: whether the command got a teacher model (checked when not None)."""
    try:
        bounded_and_finite(cfg, what="run config")
    except ConfigError as err:
        raise RunConfigError(f"run config: {err}") from None
    if not isinstance(cfg, dict):
        raise RunConfigError(f"run config: expected a JSON object, got {type(cfg).__name__}")
    from kdpipe.training.run import FAMILIES  # the trainer's own table of families

    family = cfg.get("family")
    if family not in FAMILIES:
        raise RunConfigError(f"run config: family: {family!r} is not one of {', '.join(FAMILIES)}")
    schemas = family_schemas()
    error = best_match(Draft202012Validator(schemas[family]).iter_errors(cfg))
    if error is not None:
        _refuse(error)
    if family == "classify" and cfg["method"] != "teacher":
        m = methods.get(cfg["method"])
        if m.params:
            if "method_params" not in cfg:
                raise RunConfigError(f"run config: method_params: {cfg['method']} needs its settings "
                                     f"({', '.join(m.params)})")
            error = best_match(Draft202012Validator(_method_params_schema(m.name)).iter_errors(cfg["method_params"]))
            if error is not None:
                _refuse(error, "method_params")
        if m.needs_teacher:
            for key in ("teacher", "teacher_run"):
                if key not in cfg:
                    raise RunConfigError(f"run config: {key}: {m.name} learns from a teacher; give its {key}")
            if teacher_given is False:
                raise RunConfigError(f"--teacher: run config method {m.name} learns from a teacher; give the "
                                     "teacher's model.pt")
