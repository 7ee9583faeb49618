"""A bad config stops the run before any job starts, with a message naming the key."""

import pytest
import yaml

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
}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return copy_workflow(tmp_path_factory.mktemp("config"))


@pytest.mark.parametrize("case", sorted(BAD_OVERLAYS))
def test_bad_config_stops_before_any_job(workdir, case):
    overlay, key = BAD_OVERLAYS[case]
    path = workdir / f"bad-{case.replace(' ', '-')}.yaml"
    path.write_text(yaml.safe_dump(overlay))
    # A real run (not a dry run): it must stop while loading, so nothing is created.
    proc = snakemake(workdir, "results/report.pdf", "--cores", "1", "--configfile", str(path), check=False)
    assert proc.returncode != 0
    assert "Error validating config file" in proc.stdout
    assert key in proc.stdout.split("Error validating config file", 1)[1]
    assert not (workdir / "results").exists()
    assert not (workdir / "data").exists()


@pytest.mark.parametrize("overlay", [None, "presets/demo.yaml"])
def test_shipped_configs_validate(workdir, overlay):
    args = ["-n", "results/report.pdf"] + (["--configfile", overlay] if overlay else [])
    proc = snakemake(workdir, *args)
    assert "report" in proc.stdout
