"""A bad config stops the run before any job starts, with a message naming the key.

The many bad configs are checked in-process (the workflow's schema and kdpipe.config_checks, as
common.smk runs them: tests/config_check.py); two real Snakemake runs prove the wiring.
"""

import inspect

import pytest
import torch
import yaml

from config_check import BASE, DEMO, SCHEMA, refusal
from kdpipe import config_checks
from kdpipe.data import sources, synthetic
from kdpipe.training.classify import stratified_subset
from workflow_copy import copy_workflow, snakemake

BAD_OVERLAYS = {
    "unknown key": ({"classify": {"method_params": {"kd_soft": {"temprature": 2}}}}, "temprature"),
    "unknown top-level key": ({"clasify": {}}, "clasify"),
    "wrong type": ({"classify": {"seeds": "0, 1"}}, "seeds"),
    "epochs below 1": ({"classify": {"teacher_train": {"epochs": 0}}}, "epochs"),
    "alpha above 1": ({"classify": {"method_params": {"kd_soft": {"alpha": 1.5}}}}, "alpha"),
    "alpha below 0": ({"classify": {"method_params": {"kd_hard": {"alpha": -0.1}}}}, "kd_hard"),
    "temperature zero": ({"classify": {"method_params": {"kd_soft": {"temperature": 0}}}}, "temperature"),
    "negative pair temperature": ({"classify": {"pairs": [{"teacher": "resnet56", "student": "resnet20", "method_params": {"kd_soft": {"temperature": -1}}}]}}, "temperature"),
    "unknown architecture": ({"classify": {"pairs": [{"teacher": "resnet9000", "student": "resnet20"}]}}, "resnet9000"),
    "bad device": ({"device": "tpu"}, "device"),
    "bad md5": ({"datasets": {"cifar100": {"md5": "not-a-hash"}}}, "md5"),
    "negative feature weight": ({"self_distill": {"lam": -0.03}}, "lam"),
    "unknown multi-exit arch": ({"self_distill": {"arch": "resnet99"}}, "resnet99"),
    "self-distill alpha above 1": ({"self_distill": {"alpha": 2}}, "alpha"),
    "image size not a multiple of 16": ({"autoencoder": {"data": {"size": 100}}}, "size"),
    "unknown adapter": ({"autoencoder": {"variants": {"odd": {"pairs": [[1, 4]], "adapter": "avgpool"}}}}, "avgpool"),
    "pair that does not mirror": ({"autoencoder": {"variants": {"odd": {"pairs": [[1, 3]], "adapter": "conv"}}}}, "pairs"),
    "pairs without an adapter": ({"autoencoder": {"variants": {"odd": {"pairs": [[2, 3]]}}}}, "adapter"),
    "unknown data source": ({"autoencoder": {"data": {"source": "kitti"}}}, "source"),
    "bad match direction": ({"autoencoder": {"match": "sideways"}}, "match"),
    "synthetic set without its size": ({"datasets": {"tiny": {"source": "synthetic", "num_test": 50}}}, "num_train"),
    "generator key on a CIFAR set": ({"datasets": {"cifar100": {"num_train": 100}}}, "num_train"),
    "synthetic street scenes without sizes": ({"autoencoder": {"data": {"source": "synthetic"}}}, "num_train"),
    "data set name with a dot": ({"datasets": {"my.set": {"source": "cifar10"}}}, "datasets"),
    "autoencoder data named ..": ({"autoencoder": {"data": {"name": ".."}}}, "name"),
}

PAIR = {"teacher": "resnet56", "student": "resnet20"}
OTHER = {"teacher": "resnet32x4", "student": "resnet8x4"}
C10 = {"datasets": {"c10": {"source": "cifar10"}}}

# What only kdpipe.config_checks can see: (overlays, words the message must hold).
CHECKED = {
    "duplicate pair": (
        [{"classify": {"pairs": [PAIR, OTHER, PAIR]}}],
        ["classify.pairs", "items 0 and 2", "resnet56", "resnet20"]),
    "duplicate pair with another temperature": (
        [{"classify": {"pairs": [PAIR, {**PAIR, "method_params": {"kd_soft": {"temperature": 2}}}]}}],
        ["classify.pairs", "items 0 and 1", "resnet56", "resnet20"]),
    "undefined data set": (
        [{"classify": {"dataset": "imagenet"}}],
        ["classify.dataset", "'imagenet'", "not defined under `datasets`", "cifar100"]),
    "undefined self-distillation data set": (
        [{"self_distill": {"dataset": "svhn"}}],
        ["self_distill.dataset", "'svhn'"]),
    "autoencoder data named like a data set": (
        [{"autoencoder": {"data": {"name": "cifar100"}}}],
        ["autoencoder.data.name", "'cifar100'", "data/prepared/cifar100/"]),
    "transfer set larger than CIFAR-100": (
        [{"classify": {"train_subset": 50001}}],
        ["classify.train_subset", "50001", "'cifar100'", "500 in each", "100 classes", "at most 50000"]),
    "transfer set larger than CIFAR-10": (
        [C10, {"classify": {"dataset": "c10", "train_subset": 60000}}],
        ["classify.train_subset", "60000", "'c10'", "5000 in each", "10 classes", "at most 50000"]),
    "self-distillation subset larger than the synthetic set": (
        [DEMO, {"self_distill": {"train_subset": 4001}}],
        ["self_distill.train_subset", "4001", "'synthetic10'", "400 in each", "at most 4000"]),
    "subset that stratified sampling cannot take": (
        [DEMO, {"datasets": {"synthetic10": {"num_train": 95}}, "classify": {"train_subset": 96}}],
        ["classify.train_subset", "96", "9 to 10 in each", "at most 95"]),
}

ACCEPTED = {
    "the whole of CIFAR-100": [{"classify": {"train_subset": 50000}}],
    "the whole of CIFAR-10": [C10, {"classify": {"dataset": "c10", "train_subset": 50000}}],
    "the whole synthetic set": [DEMO, {"self_distill": {"train_subset": 4000}}],
    "an uneven synthetic set": [DEMO, {"datasets": {"synthetic10": {"num_train": 95}}, "classify": {"train_subset": 95},
                                       "self_distill": {"train_subset": None}}],
    "two pairs with one student": [{"classify": {"pairs": [PAIR, {"teacher": "resnet110", "student": "resnet20"}]}}],
}


@pytest.mark.parametrize("case", sorted(BAD_OVERLAYS))
def test_schema_refuses_a_bad_config_naming_the_key(case):
    overlay, key = BAD_OVERLAYS[case]
    message = refusal(overlay)
    assert message is not None and message.startswith("Error validating config file")
    assert key in message


@pytest.mark.parametrize("case", sorted(CHECKED))
def test_config_checks_refuse_what_the_schema_cannot_see(case):
    overlays, words = CHECKED[case]
    message = refusal(*overlays)
    assert message is not None and message.startswith("Error in the config: ")
    for word in words:
        assert word in message, f"{word!r} not in: {message}"


@pytest.mark.parametrize("case", sorted(ACCEPTED))
def test_config_checks_accept_what_can_run(case):
    assert refusal(*ACCEPTED[case]) is None


def test_a_pair_attention_transfer_cannot_pool_stops_before_any_job(monkeypatch):
    """Attention transfer pools a stage's larger map by an integer factor only: a student whose
    registered maps are 24, 12, 6 a side against a teacher's 32, 16, 8 is refused by the config
    check, naming the pair, the method and the stage; the same pair without AT runs, and so does a
    student at 16, 8, 4 (pooled by 2)."""
    from dataclasses import replace

    from kdpipe import architectures

    def toy(name, sides):
        entry = replace(architectures.get("resnet8"), name=name,
                        stage_shapes=tuple((c, s, s) for c, s in zip((16, 32, 64), sides)))
        monkeypatch.setitem(architectures.ARCHITECTURES, name, entry)

    toy("odd8", (24, 12, 6))
    toy("half8", (16, 8, 4))
    pairs = [PAIR, {"teacher": "resnet56", "student": "odd8"}]
    message = refusal({"classify": {"pairs": pairs}})
    assert message == (
        "Error in the config: classify.pairs[1]: method 'at' cannot pair teacher resnet56 with student odd8: "
        "stage 1 maps are 24x24 (student) and 32x32 (teacher), and attention transfer pools the larger by an "
        "integer factor only (stage shapes from kdpipe.architectures, 32x32 images); drop this pair from "
        "classify.pairs or at from classify.methods")
    without_at = [m for m in BASE["classify"]["methods"] if m != "at"]
    assert refusal({"classify": {"pairs": pairs, "methods": without_at}}) is None
    assert refusal({"classify": {"pairs": [PAIR, {"teacher": "resnet56", "student": "half8"}]}}) is None


@pytest.mark.parametrize("overlays", [[], [DEMO]], ids=["config.yaml", "demo"])
def test_shipped_configs_pass_every_check(overlays):
    assert refusal(*overlays) is None


@pytest.mark.parametrize("num_train,num_classes", [(4000, 10), (95, 10), (105, 10), (37, 4), (7, 10)])
def test_largest_subset_is_what_stratified_sampling_can_take(num_train, num_classes):
    # Labels dealt as kdpipe.data.synthetic deals them; the check's bound must be exact.
    labels = torch.arange(num_train) % num_classes
    largest = config_checks._stratified_max(config_checks.train_class_sizes(
        {"source": "synthetic", "num_train": num_train, "num_classes": num_classes}))
    assert len(stratified_subset(labels, largest, seed=0)) == largest
    with pytest.raises(ValueError, match="only"):
        stratified_subset(labels, largest + 1, seed=0)


def test_checks_know_the_data_sets_class_sizes():
    assert config_checks.SYNTHETIC_NUM_CLASSES == inspect.signature(synthetic.generate).parameters["num_classes"].default
    for spec in sources.CIFAR.values():
        assert spec["num_classes"] * spec["train_per_class"] == 50000


def test_run_names_follow_the_schemas_safe_name():
    safe = yaml.safe_load(SCHEMA.read_text())["$defs"]["safe_name"]
    assert config_checks.SAFE_NAME.pattern == safe["pattern"]
    assert config_checks.SAFE_NAME_MAX == safe["maxLength"]


# ----------------------------------------------------------------------------- the wiring, in real runs


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("config"))


REAL_RUNS = {
    "schema": ({"classify": {"method_params": {"kd_soft": {"temprature": 2}}}}, "Error validating config file", "temprature"),
    "config check": ({"classify": {"pairs": [PAIR, {**PAIR, "method_params": {"kd_soft": {"temperature": 2}}}]}}, "Error in the config", "classify.pairs"),
}


@pytest.mark.parametrize("case", sorted(REAL_RUNS))
def test_bad_config_stops_a_real_run_before_any_job(workdir, case):
    overlay, heading, key = REAL_RUNS[case]
    path = workdir / f"bad-{case.replace(' ', '-')}.yaml"
    path.write_text(yaml.safe_dump(overlay))
    # A real run (not a dry run): it must stop while loading, so nothing is created.
    proc = snakemake(workdir, "results/report.pdf", "--cores", "1", "--configfile", str(path), check=False)
    assert proc.returncode != 0
    assert heading in proc.stdout
    assert key in proc.stdout.split(heading, 1)[1]
    assert not (workdir / "results").exists()
    assert not (workdir / "data").exists()


@pytest.mark.parametrize("overlays", [[], ["presets/demo.yaml"], ["presets/demo.yaml", "presets/sweep-demo.yaml"],
                                      ["presets/transfer-set.yaml"]], ids=lambda o: "+".join(o) or "config.yaml")
def test_shipped_configs_validate(workdir, overlays):
    args = ["-n", "results/report.pdf"] + (["--configfile", *overlays] if overlays else [])
    proc = snakemake(workdir, *args)
    assert "report" in proc.stdout
    for name in yaml.safe_load((workdir / overlays[-1]).read_text())["classify"].get("sweeps", {}) if overlays else []:
        assert f"tables_sweep_{name}" in proc.stdout and f"figures_sweep_{name}" in proc.stdout
