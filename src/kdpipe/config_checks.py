"""Config checks that JSON schema cannot express, run right after schema validation.

Each check is a small function of the validated config returning a list of problems (each naming
its key); ``check_config`` runs them all and raises one ``ConfigError`` listing every problem.
"""

from kdpipe import methods


class ConfigError(ValueError):
    pass


def pair_settings_name_listed_methods(config: dict) -> list[str]:
    """A pair's method_params for a method that classify.methods does not run is a typo or a leftover."""
    c = config["classify"]
    problems = []
    for i, pair in enumerate(c["pairs"]):
        for method in pair.get("method_params", {}):
            if method not in c["methods"]:
                problems.append(f"classify.pairs[{i}].method_params.{method}: {method} is not in classify.methods "
                                f"({', '.join(c['methods'])})")
    return problems


def untaught_runs_agree(config: dict) -> list[str]:
    """A method without a teacher runs once per student architecture and seed, whichever pairs list
    that student: pairs that give it different settings would ask one run for two configs."""
    c = config["classify"]
    problems = []
    for method in c["methods"]:
        if methods.get(method).needs_teacher:
            continue
        seen: dict[str, tuple[int, dict]] = {}
        for i, pair in enumerate(c["pairs"]):
            params = methods.resolve_params(method, c.get("method_params"), pair.get("method_params"))
            first = seen.setdefault(pair["student"], (i, params))
            if first[1] != params:
                problems.append(f"classify.pairs[{i}].method_params.{method}: {method} trains {pair['student']} once "
                                f"for every pair, but pairs[{first[0]}] sets {first[1]} and pairs[{i}] {params}")
    return problems


def some_method_learns_from_the_teacher(config: dict) -> list[str]:
    """Pairs are teacher→student comparisons: with no method that learns from a teacher there is no
    teacher to train and no pair for the tables to show."""
    if not any(methods.get(m).needs_teacher for m in config["classify"]["methods"]):
        taught = [name for name, m in methods.METHODS.items() if m.needs_teacher]
        return [f"classify.methods: none of {config['classify']['methods']} learns from a teacher; "
                f"add at least one of {', '.join(taught)}"]
    return []


CHECKS = [pair_settings_name_listed_methods, untaught_runs_agree, some_method_learns_from_the_teacher]


def check_config(config: dict) -> None:
    problems = [p for check in CHECKS for p in check(config)]
    if problems:
        raise ConfigError("Error validating config file: " + "; ".join(problems))
