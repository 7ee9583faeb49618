"""Config values are untrusted input: a name that could run shell code or write outside the project
is refused before any job, wherever the config uses names.

Most cases are checked in-process (tests/config_check.py: the workflow's schema and
kdpipe.config_checks); one real Snakemake run proves that nothing runs and nothing is written.
"""

import shlex
from pathlib import Path

import pytest
import yaml

from kdpipe.config_schema import validate_config as validate  # the YAML schema plus the method registry's part

from config_check import DEMO, SCHEMA, merged, refusal
from kdpipe.config_checks import check_config
from workflow_copy import copy_workflow, snakemake


def hostile_names(marker: Path) -> list[str]:
    """Names a shared preset, an overlay or `dvc exp run -S` could carry; ``marker`` is what an
    injected command would create."""
    return [
        f"x$(touch {marker})", f"x`touch {marker}`", f"x;touch {marker}", f"x|touch {marker}",
        f"x&&touch {marker}", f"x>{marker}", "x$HOME", "x'y", 'x"y', "x*", "~", "-rf",
        ".", "..", "/", "a/b", "../../escaped", "/tmp/absolute", "a.b",
        "with space", " lead", "tab\there", "new\nline", "", "x" * 300, "x" * 65,
    ]


def _variant(name: str) -> dict:
    return {"autoencoder": {"variants": {name: {"pairs": [[1, 4]], "adapter": "maxpool"}}}}


# Every key whose value (or key) becomes a folder, a file name, a wildcard or a command word:
# name -> (overlay on the demo preset, a word of the key path the refusal must name).
NAME_KEYS = {
    "datasets key": (lambda n: {"datasets": {n: {"source": "synthetic", "num_train": 100, "num_test": 20}},
                                "classify": {"dataset": n}, "self_distill": {"dataset": n}}, "datasets"),
    "datasets key (cifar)": (lambda n: {"datasets": {n: {"source": "cifar10"}}}, "datasets"),
    "classify.dataset": (lambda n: {"classify": {"dataset": n}}, "classify"),
    "self_distill.dataset": (lambda n: {"self_distill": {"dataset": n}}, "self_distill"),
    "autoencoder.data.name": (lambda n: {"autoencoder": {"data": {"name": n}}}, "autoencoder"),
    "autoencoder.variants key": (_variant, "variants"),
}


@pytest.mark.parametrize("key", sorted(NAME_KEYS))
def test_every_hostile_name_is_refused_wherever_names_go(key, tmp_path):
    marker = tmp_path / "injected"
    overlay, where = NAME_KEYS[key]
    before = set(tmp_path.iterdir())
    for name in hostile_names(marker):
        message = refusal(DEMO, overlay(name))
        assert message is not None, f"{key}: {name!r} was accepted"
        assert message.startswith("Error validating config file"), message
        assert where in message, f"{key}: {name!r}: the message does not name {where!r}:\n{message}"
        # The rule in words, so a user knows what a name may be.
        assert "only letters, digits, '_' and '-'" in message
    assert not marker.exists()
    assert set(tmp_path.iterdir()) == before


# Names of the shipped configs and their like.
GOOD_NAMES = ["cifar100", "cifar10", "synthetic10", "street_scenes", "cityscapes", "e1d4_e2d3_maxpool",
              "baseline", "my-set", "A1", "x" * 64]


def _use_everywhere(config: dict, name: str) -> None:
    """Put ``name`` in every name-bearing key at once (one data set, the autoencoder's data, a variant)."""
    config["datasets"] = {name: {"source": "synthetic", "num_train": 1000, "num_test": 20}}
    config["classify"]["dataset"] = config["self_distill"]["dataset"] = name
    config["autoencoder"]["data"]["name"] = name + "_ae" if len(name) < 61 else "ae"
    config["autoencoder"]["variants"][name] = {"pairs": [[1, 4]], "adapter": "maxpool"}


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_ordinary_names_stay_valid(name):
    config = merged(DEMO)
    _use_everywhere(config, name)
    validate(config, str(SCHEMA))
    check_config(config)
    config = merged(DEMO)
    config["autoencoder"]["data"]["name"] = name
    validate(config, str(SCHEMA))


def test_a_name_the_schema_accepts_is_one_shell_word_and_one_path_component():
    import re

    safe = yaml.safe_load(SCHEMA.read_text())["$defs"]["safe_name"]
    pattern = re.compile(safe["pattern"])
    candidates = GOOD_NAMES + hostile_names(Path("/tmp/m")) + ["-", "_", "a-", "0", "a_b-c"]
    for name in candidates:
        if pattern.match(name) and len(name) <= safe["maxLength"]:
            assert shlex.split(name) == [name] and shlex.quote(name) == name
            assert Path(name).name == name and name not in (".", "..") and not name.startswith("-")


def test_the_report_name_is_free_text_but_only_ever_a_quoted_word():
    # `name` is printed on the title page, not used as a path: any text is fine, and the report
    # rule passes it as `--name {params.name:q}` (tests/test_rule_quoting.py checks every rule).
    assert refusal(DEMO, {"name": "Étude $(touch x); `y` | z"}) is None
    report_rule = (SCHEMA.parents[1] / "rules" / "report.smk").read_text()
    assert "--name {params.name:q}" in report_rule


def test_a_hostile_data_set_name_runs_nothing_in_a_real_run(tmp_path):
    project = copy_workflow(tmp_path / "project")
    marker = tmp_path / "injected"
    name = f"x$(touch {marker})"
    overlay = project / "hostile.yaml"
    overlay.write_text(yaml.safe_dump({
        "datasets": {name: {"source": "synthetic", "num_train": 100, "num_test": 20}},
        "classify": {"dataset": name},
    }))
    # The reproduction: a real run up to the job that would prepare the hostile set.
    proc = snakemake(project, "results/report.pdf", "--until", "prepare_synthetic", "--cores", "1",
                     "--configfile", "presets/demo.yaml", str(overlay), check=False)
    assert proc.returncode != 0
    assert "Error validating config file" in proc.stdout
    assert "instance['datasets']" in proc.stdout and name in proc.stdout
    assert not marker.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["project"]
    assert not (project / "results").exists() and not (project / "data").exists()


def test_an_unsafe_run_name_built_by_the_plan_is_refused(monkeypatch):
    # Defence in depth: names the plan derives (role, method, architecture, seed) are checked too,
    # so a later method or family whose name is unsafe is caught before any job.
    from kdpipe import config_checks, plan

    runs = plan.training_runs(merged(DEMO))
    family, run = next(iter(runs))
    bad = {**runs, (family, "../escaped-s0"): runs[(family, run)]}
    monkeypatch.setattr(plan, "training_runs", lambda config: bad)
    message = refusal(DEMO)
    assert message.startswith("Error in the config: ") and "'../escaped-s0'" in message
    assert "not a safe file name" in message and config_checks.RUN_NAME_MAX > config_checks.SAFE_NAME_MAX
