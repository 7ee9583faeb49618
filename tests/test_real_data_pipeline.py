"""The real download code paths, through the DAG: CIFAR-100 and pix2pix's Cityscapes archives in
their real formats, built by the tests and served from 127.0.0.1, with the shipped config.yaml."""

import json

import pytest
import yaml

from test_cifar import _md5, make_cifar100
from test_cityscapes_data import _pix2pix_archive
from kdpipe.data.street_scenes import generate
from workflow_copy import copy_workflow, planned_jobs, snakemake

pytestmark = pytest.mark.pipeline


def test_downloads_prepare_and_train_through_the_dag(http_server, tmp_path):
    archive, _ = make_cifar100(tmp_path / "build", n_train=120, n_test=30)
    (http_server.root / archive.name).write_bytes(archive.read_bytes())
    scenes = generate(8, 4, size=32, seed=3)
    _pix2pix_archive(http_server.root / "cityscapes.tar.gz", {"train": scenes["train"], "val": scenes["test"]})
    workdir = copy_workflow(tmp_path / "project")
    overlay = {
        "datasets": {"cifar100": {"url": http_server.url(archive.name), "md5": _md5(archive)}},
        "classify": {
            "seeds": [0],
            "teacher_train": {"epochs": 1, "batch_size": 32},
            "student_train": {"epochs": 1, "batch_size": 32},
            "pairs": [{"teacher": "resnet8", "student": "resnet8"}],
        },
        "autoencoder": {
            "data": {"size": 32, "url": http_server.url("cityscapes.tar.gz")},
            "seeds": [0],
            "width": 4,
            "train": {"epochs": 1, "batch_size": 4},
        },
    }
    (workdir / "local.yaml").write_text(yaml.safe_dump(overlay))
    targets = ["results/cifar100/classify/kd_soft-resnet8-from-resnet8-s0/metrics.json",
               "results/cityscapes/autoencoder/e1d4_conv-s0/metrics.json"]
    args = [*targets, "--configfile", "local.yaml"]
    assert planned_jobs(snakemake(workdir, "-n", *args).stdout) == {
        "download_cifar": 1, "prepare_cifar": 1, "download_pix2pix": 1, "prepare_pix2pix": 1, "train": 3}
    snakemake(workdir, *args, "--cores", "2", timeout=900)
    kd = json.loads((workdir / targets[0]).read_text())
    assert kd["train_images"] == 120 and kd["test_images"] == 30 and len(kd["config"]["method_params"]) == 2
    ae = json.loads((workdir / targets[1]).read_text())
    assert ae["train_images"] == 8 and ae["test_images"] == 4 and 0 <= ae["last"]["pixel_acc"] <= 1
    raw = workdir / "data" / "raw"
    assert sorted(p.name for p in (raw / "cifar100").iterdir()) == ["cifar-100-python.tar.gz"]
    # No checksum is published for pix2pix's archive: the first download's is recorded.
    assert sorted(p.name for p in (raw / "cityscapes").iterdir()) == ["cityscapes.tar.gz", "cityscapes.tar.gz.sha256"]
