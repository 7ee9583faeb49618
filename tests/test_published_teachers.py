"""Published teachers (issue 17 item 1): a teacher imported from an archive of checkpoints in
mdistiller's layout, served on 127.0.0.1, instead of trained; and the hostile and broken archives
it must refuse (wrong keys or shapes, code in the pickle, '..' and links, truncated, changed)."""

import hashlib
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from config_check import DEMO, refusal
from kdpipe import plan
from kdpipe.cli import main
from kdpipe.data import checkpoint_archive
from kdpipe.data.archive import fetch
from kdpipe.data.synthetic import prepare_synthetic
from kdpipe.errors import ArchiveError, CheckpointError
from kdpipe.models import build_model
from kdpipe.training.classify import load_model_file
from kdpipe.training.imported import import_teacher
from workflow_copy import copy_workflow, snakemake

ARCH = "resnet8"
MEMBER = f"cifar_teachers/{ARCH}_vanilla/ckpt_epoch_240.pth"
ROOT = Path(__file__).resolve().parents[1]
RECIPE = {"epochs": 240, "batch_size": 64, "lr": 0.05}


def teacher_state(arch: str = ARCH, num_classes: int = 10, seed: int = 0) -> dict:
    """A real kdpipe model's state_dict: RepDistiller's CIFAR ResNets have these very key names and shapes."""
    torch.manual_seed(seed)
    return build_model(arch, num_classes).state_dict()


def checkpoint_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def published(state: dict) -> bytes:
    """A checkpoint as RepDistiller's train_teacher.py saves it (``accuracy`` is a tensor there)."""
    return checkpoint_bytes({"model": state, "epoch": 240, "accuracy": torch.tensor(72.3)})


def write_tar(path: Path, members: dict[str, bytes], links: dict[str, str] | None = None) -> Path:
    """A plain tar in mdistiller's layout: ``members`` name -> bytes, ``links`` name -> symlink target."""
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tf.addfile(info)
    return path


def run_config(member: str = MEMBER, url: str = "http://127.0.0.1/cifar_teachers.tar", arch: str = ARCH) -> dict:
    return {"family": "classify", "run": f"teacher-{arch}-s0", "role": "teacher", "method": "teacher", "arch": arch,
            "dataset": "synthetic10", "dataset_source": "synthetic", "device": "cpu", "augment": True, "seed": 0,
            "train": RECIPE, "train_subset": None, "import": {"source": "testsrc", "url": url, "member": member}}


@pytest.fixture(scope="module")
def splits(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("prepared")
    params = {"num_train": 200, "num_test": 60, "num_classes": 10, "group_size": 2, "seed": 0}
    prepare_synthetic(params, train_out=root / "train.pt", test_out=root / "test.pt")
    return root / "train.pt", root / "test.pt"


def do_import(archive: Path, splits, out: Path, *, member: str = MEMBER, record: bool = True, sha256=None) -> dict:
    return import_teacher(run_config(member), archive=archive, train_path=splits[0], test_path=splits[1],
                          model_path=out / "model.pt", metrics_path=out / "metrics.json",
                          history_path=out / "history.csv", sha256=sha256,
                          record_sha256=Path(f"{archive}.sha256") if record else None)


def measured_top1(state: dict, splits) -> float:
    """Top-1 % of ``state`` on the test split, normalised by the train split's channel statistics: what a
    trained teacher's evaluation does, written out here independently."""
    train, test = (torch.load(p, weights_only=True) for p in splits)
    scaled = train["images"].float() / 255
    mean, std = scaled.mean(dim=(0, 2, 3), keepdim=True), scaled.std(dim=(0, 2, 3), keepdim=True)
    model = build_model(ARCH, 10)
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        pred = model((test["images"].float() / 255 - mean) / std).argmax(1)
    return 100.0 * (pred == test["labels"]).sum().item() / len(test["labels"])


def test_a_served_archive_is_downloaded_recorded_and_its_teacher_imported(http_server, tmp_path, splits, capsys):
    state = teacher_state()
    member_bytes = published(state)
    served = write_tar(http_server.root / "cifar_teachers.tar",
                       {"cifar_teachers/resnet56_vanilla/ckpt_epoch_240.pth": published(teacher_state("resnet56", 100)),
                        MEMBER: member_bytes})
    raw = tmp_path / "raw" / "testsrc.tar"
    url = http_server.url("cifar_teachers.tar")
    assert main(["download", "--url", url, "--sha256", "", "--record-sha256", f"{raw}.sha256", "--out", str(raw)]) == 0
    assert Path(f"{raw}.sha256").read_text().strip() == hashlib.sha256(served.read_bytes()).hexdigest()

    out = tmp_path / "run"
    cfg = run_config(url=url)
    assert main(["import-teacher", "--run-config", json.dumps(cfg), "--archive", str(raw), "--sha256", "",
                 "--record-sha256", f"{raw}.sha256", "--train", str(splits[0]), "--test", str(splits[1]),
                 "--model", str(out / "model.pt"), "--metrics", str(out / "metrics.json"),
                 "--history", str(out / "history.csv")]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["imported"] is True
    assert m["source"] == {"name": "testsrc", "url": url, "member": MEMBER}
    assert m["checkpoint_sha256"] == hashlib.sha256(member_bytes).hexdigest()
    assert m["archive_sha256"] == hashlib.sha256(served.read_bytes()).hexdigest()
    assert m["checkpoint_epoch"] == 240 and m["checkpoint_accuracy"] == pytest.approx(72.3, abs=1e-4)
    assert m["config"] == cfg and m["score"] == "top1"
    assert m["best"]["top1"] == pytest.approx(measured_top1(state, splits), abs=1e-9)
    assert m["best"] == m["last"] and m["best"]["epoch"] == 240
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [240] and history["top1"].iloc[0] == pytest.approx(m["best"]["top1"])
    # model.pt is a trained teacher's: the students' loader rebuilds the very weights of the checkpoint.
    saved = torch.load(out / "model.pt", weights_only=True)
    assert (saved["arch"], saved["num_classes"]) == (ARCH, 10)
    rebuilt = load_model_file(out / "model.pt", torch.device("cpu")).state_dict()
    assert rebuilt.keys() == state.keys() and all(torch.equal(rebuilt[k], state[k]) for k in state)
    assert "imported" in capsys.readouterr().out


def test_a_second_download_that_differs_is_refused_naming_both_checksums(http_server, tmp_path):
    served = http_server.root / "cifar_teachers.tar"
    raw, record = tmp_path / "testsrc.tar", tmp_path / "testsrc.tar.sha256"
    write_tar(served, {MEMBER: published(teacher_state(seed=0))})
    first = hashlib.sha256(served.read_bytes()).hexdigest()
    fetch(http_server.url("cifar_teachers.tar"), raw, record_sha256=record)
    raw.unlink()
    write_tar(served, {MEMBER: published(teacher_state(seed=1))})  # the server now gives another archive
    second = hashlib.sha256(served.read_bytes()).hexdigest()
    with pytest.raises(ArchiveError) as err:
        fetch(http_server.url("cifar_teachers.tar"), raw, record_sha256=record)
    assert first in str(err.value) and second in str(err.value)
    assert not raw.exists() and record.read_text().strip() == first


def test_a_wrong_archive_placed_by_hand_is_refused_before_any_member_is_read(tmp_path, splits):
    archive = write_tar(tmp_path / "testsrc.tar", {MEMBER: published(teacher_state())})
    pinned = "0" * 64
    with pytest.raises(ArchiveError) as err:
        do_import(archive, splits, tmp_path / "run", record=False, sha256=pinned)
    assert pinned in str(err.value) and hashlib.sha256(archive.read_bytes()).hexdigest() in str(err.value)
    assert not (tmp_path / "run").exists()


def test_an_archive_placed_by_hand_is_recorded_at_first_use(tmp_path, splits):
    archive = write_tar(tmp_path / "testsrc.tar", {MEMBER: published(teacher_state())})
    m = do_import(archive, splits, tmp_path / "run")
    assert Path(f"{archive}.sha256").read_text().strip() == m["archive_sha256"] == hashlib.sha256(
        archive.read_bytes()).hexdigest()


def test_a_truncated_archive_is_never_recorded_nor_imported(http_server, tmp_path, splits):
    whole = write_tar(tmp_path / "whole.tar", {MEMBER: published(teacher_state())})
    cut = whole.read_bytes()[: whole.stat().st_size // 2]
    (http_server.root / "cifar_teachers.tar").write_bytes(cut)
    raw, record = tmp_path / "raw" / "testsrc.tar", tmp_path / "raw" / "testsrc.tar.sha256"
    with pytest.raises(ArchiveError, match="did not return an archive|damaged or incomplete"):
        fetch(http_server.url("cifar_teachers.tar"), raw, record_sha256=record)
    assert not raw.exists() and not record.exists()
    # The same cut file placed by hand: refused before import, nothing recorded, nothing written.
    raw.write_bytes(cut)
    with pytest.raises(ArchiveError, match="is not an archive|damaged or incomplete"):
        do_import(raw, splits, tmp_path / "run")
    assert not record.exists() and not (tmp_path / "run").exists()
    # Trusting it anyway (a pinned checksum of the cut file): the member itself is found cut short.
    with pytest.raises(ArchiveError, match="damaged or incomplete"):
        do_import(raw, splits, tmp_path / "run", record=False, sha256=hashlib.sha256(cut).hexdigest())


def _one_line(err: BaseException) -> str:
    assert "\n" not in str(err)
    return str(err)


def test_wrong_keys_are_named(tmp_path, splits):
    state = teacher_state()
    state["layer9.0.conv1.weight"] = state.pop("layer1.0.conv1.weight")
    del state["fc.bias"]
    archive = write_tar(tmp_path / "testsrc.tar", {MEMBER: published(state)})
    with pytest.raises(CheckpointError) as err:
        do_import(archive, splits, tmp_path / "run")
    msg = _one_line(err.value)
    assert "missing 2 (layer1.0.conv1.weight, fc.bias)" in msg and "unexpected 1 (layer9.0.conv1.weight)" in msg
    assert f"classify.published_teachers.{ARCH}" in msg and MEMBER in msg
    assert not (tmp_path / "run").exists()


def test_wrong_shapes_are_named(tmp_path, splits):
    archive = write_tar(tmp_path / "testsrc.tar", {MEMBER: published(teacher_state(num_classes=100))})
    with pytest.raises(CheckpointError) as err:
        do_import(archive, splits, tmp_path / "run")
    assert "other shape 2 (fc.weight [100, 64] vs [10, 64], fc.bias [100] vs [10])" in _one_line(err.value)


def test_a_checkpoint_without_a_model_entry_is_refused(tmp_path, splits):
    archive = write_tar(tmp_path / "testsrc.tar", {MEMBER: checkpoint_bytes({"net": teacher_state(), "epoch": 240})})
    with pytest.raises(CheckpointError, match="'model' entry"):
        do_import(archive, splits, tmp_path / "run")


class _Planted:
    """Unpickled, this calls open(marker, "w"): code that runs on a plain pickle load."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_code_in_the_pickle_never_runs(tmp_path, splits):
    marker = tmp_path / "planted-marker"
    data = checkpoint_bytes({"model": teacher_state(), "epoch": 240, "accuracy": _Planted(marker)})
    # The planted object really runs on a trusting load (else this test proves nothing) ...
    torch.load(io.BytesIO(data), weights_only=False)
    assert marker.exists()
    marker.unlink()
    # ... and never through the import, which refuses the checkpoint.
    archive = write_tar(tmp_path / "testsrc.tar", {MEMBER: data})
    with pytest.raises(CheckpointError) as err:
        do_import(archive, splits, tmp_path / "run")
    assert "weights_only" in _one_line(err.value) and "nothing in it was run" in str(err.value)
    assert not marker.exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("member", ["cifar_teachers/../resnet8_vanilla/ckpt_epoch_240.pth", "../ckpt.pth",
                                    "/cifar_teachers/resnet8_vanilla/ckpt_epoch_240.pth"])
def test_a_member_path_leaving_the_archive_is_refused(tmp_path, splits, member):
    archive = write_tar(tmp_path / "testsrc.tar", {member: published(teacher_state()),
                                                    MEMBER: published(teacher_state())})
    with pytest.raises(ArchiveError, match="refusing archive member"):
        do_import(archive, splits, tmp_path / "run", member=member)
    # The run config's own schema refuses it too (kdpipe import-teacher by hand).
    assert main(["import-teacher", "--run-config", json.dumps(run_config(member)), "--archive", str(archive),
                 "--train", str(splits[0]), "--test", str(splits[1]), "--model", str(tmp_path / "m.pt"),
                 "--metrics", str(tmp_path / "m.json"), "--history", str(tmp_path / "h.csv")]) == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / "m.pt").exists()


def test_a_member_that_is_a_link_is_refused_and_nothing_is_extracted(tmp_path, splits):
    (tmp_path / "teachers").mkdir()
    archive = write_tar(tmp_path / "teachers" / "testsrc.tar",
                        {"cifar_teachers/resnet56_vanilla/ckpt_epoch_240.pth": published(teacher_state())},
                        links={MEMBER: "../../../../etc/passwd"})
    with pytest.raises(ArchiveError, match="links and special files"):
        do_import(archive, splits, tmp_path / "run")
    # Only the archive and its recorded checksum are beside it: no member was ever written to disk.
    assert sorted(p.name for p in archive.parent.iterdir()) == ["testsrc.tar", "testsrc.tar.sha256"]


def test_reading_a_member_writes_nothing(tmp_path):
    archive = write_tar(tmp_path / "a.tar", {MEMBER: b"x" * 1000, "other/file.bin": b"y" * 10})
    before = sorted(os.listdir(tmp_path))
    assert checkpoint_archive.read_member(archive, MEMBER) == b"x" * 1000
    assert sorted(os.listdir(tmp_path)) == before
    with pytest.raises(ArchiveError, match="has no member cifar_teachers/resnet20_vanilla"):
        checkpoint_archive.read_member(archive, "cifar_teachers/resnet20_vanilla/ckpt_epoch_240.pth")


def test_a_trained_run_config_is_refused_by_import_and_an_imported_one_by_train(tmp_path, splits, capsys):
    trained = {k: v for k, v in run_config().items() if k != "import"}
    common = ["--train", str(splits[0]), "--test", str(splits[1]), "--model", str(tmp_path / "m.pt"),
              "--metrics", str(tmp_path / "m.json"), "--history", str(tmp_path / "h.csv")]
    assert main(["import-teacher", "--run-config", json.dumps(trained), "--archive", str(tmp_path / "a.tar"),
                 *common]) == 1
    assert "kdpipe: run config: import: this run trains its teacher" in capsys.readouterr().err
    assert main(["train", "--run-config", json.dumps(run_config()), "--resume", str(tmp_path / "r.pt"), *common]) == 1
    assert "kdpipe import-teacher" in capsys.readouterr().err


# ---- the config: keys, checks, the plan ----

SOURCE = {"url": "http://127.0.0.1:1/cifar_teachers.tar", "member": "cifar_teachers/{arch}_vanilla/ckpt_epoch_240.pth",
          "archs": ["resnet14"], "recipe": RECIPE}


def test_the_plan_marks_imported_teachers_and_only_them():
    config = yaml.safe_load(ROOT.joinpath("config.yaml").read_text())
    preset = yaml.safe_load(ROOT.joinpath("presets", "published-teachers.yaml").read_text())
    config["classify"]["published_teachers"] = preset["classify"]["published_teachers"]
    runs = plan.classify_runs(config)
    teachers = {name: cfg for name, cfg in runs.items() if cfg["role"] == "teacher"}
    assert teachers and all(cfg["import"] == {
        "source": "mdistiller", "url": config["teacher_sources"]["mdistiller"]["url"],
        "member": f"cifar_teachers/{cfg['arch']}_vanilla/ckpt_epoch_240.pth"} for cfg in teachers.values())
    assert all(cfg["train"] == config["teacher_sources"]["mdistiller"]["recipe"] for cfg in teachers.values())
    assert not any("import" in cfg for cfg in runs.values() if cfg["role"] != "teacher")
    assert plan.used_teacher_sources(config) == ["mdistiller"]
    # Changing how teachers would be trained changes no imported run (students would retrain after it).
    config["classify"]["teacher_train"]["epochs"] = 7
    assert {n: c for n, c in plan.classify_runs(config).items() if n in teachers} == teachers


def test_the_mdistiller_preset_is_a_valid_config():
    preset = yaml.safe_load(ROOT.joinpath("presets", "published-teachers.yaml").read_text())
    assert refusal(preset) is None


@pytest.mark.parametrize("overlay, words", [
    ({"classify": {"published_teachers": {"resnet20": "mdistiller"}}},
     ["classify.published_teachers.resnet20", "mdistiller", "does not provide resnet20", "resnet56"]),
    ({"classify": {"published_teachers": {"resnet56": "nowhere"}}},
     ["classify.published_teachers.resnet56", "'nowhere' is not defined under `teacher_sources`"]),
    ({"teacher_sources": {"evil": {**SOURCE, "member": "../{arch}.pth"}}}, ["member"]),
    ({"teacher_sources": {"evil": {**SOURCE, "member": "a/../{arch}.pth"}}}, ["member"]),
    ({"teacher_sources": {"evil": {**SOURCE, "member": "/abs/{arch}.pth"}}}, ["member"]),
    ({"teacher_sources": {"evil": {**SOURCE, "member": "no-arch.pth"}}}, ["member"]),
    ({"teacher_sources": {"evil": {**SOURCE, "sha256": "abc"}}}, ["sha256"]),
    ({"teacher_sources": {"bad.name": SOURCE}}, ["teacher_sources"]),
    ({"classify": {"published_teachers": {"vgg99": "mdistiller"}}}, ["vgg99"]),
], ids=["not provided", "undefined source", "member ..", "member a/..", "absolute member", "member without {arch}",
        "bad sha256", "source name with a dot", "unknown architecture"])
def test_a_bad_published_teacher_config_is_refused_naming_the_key(overlay, words):
    message = refusal(DEMO, overlay)
    assert message is not None and all(w in message for w in words), message


# ---- the pipeline: the tiny preset with its teacher imported from a served archive ----

@pytest.mark.pipeline
def test_the_pipeline_imports_the_teacher_students_learn_from_it(http_server, tmp_path):
    teacher = DEMO["classify"]["pairs"][0]["teacher"]
    state = teacher_state(teacher, 10)
    member = f"cifar_teachers/{teacher}_vanilla/ckpt_epoch_240.pth"
    write_tar(http_server.root / "cifar_teachers.tar", {member: published(state)})
    workdir = copy_workflow(tmp_path / "wf")
    overlay = {"teacher_sources": {"testsrc": {**SOURCE, "url": http_server.url("cifar_teachers.tar"),
                                               "archs": [teacher]}},
               "classify": {"published_teachers": {teacher: "testsrc"}, "methods": ["alone", "kd_soft"]}}
    (workdir / "imported.yaml").write_text(yaml.safe_dump(overlay))
    classify = workdir / "results" / "synthetic10" / "classify"
    students = ["alone-resnet8-s0", f"kd_soft-resnet8-from-{teacher}-s0"]
    # The classifier runs only (the import and the students that learn from it): the other families
    # and the report are what every other pipeline test builds.
    snakemake(workdir, *(f"results/synthetic10/classify/{s}/metrics.json" for s in students), "--cores", "2",
              "--configfile", "presets/demo.yaml", "presets/tiny.yaml", "imported.yaml", timeout=600)
    run = classify / f"teacher-{teacher}-s0"
    m = json.loads((run / "metrics.json").read_text())
    assert m["imported"] is True and m["source"]["member"] == member
    assert m["checkpoint_sha256"] == hashlib.sha256(published(state)).hexdigest()
    # Made by the import rule, never trained: no train job log or benchmark for it.
    assert (workdir / "results" / "logs" / "import_teacher" / f"synthetic10-classify-teacher-{teacher}-s0.log").exists()
    assert not (workdir / "results" / "logs" / "train" / f"synthetic10-classify-teacher-{teacher}-s0.log").exists()
    assert (workdir / "data" / "raw" / "published_teachers" / "testsrc.tar.sha256").exists()
    # The student learnt from exactly these weights: its teacher input is this model.pt.
    saved = torch.load(run / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(saved[k], state[k]) for k in state)
    student = json.loads((workdir / "results" / "synthetic10" / "classify" /
                          f"kd_soft-resnet8-from-{teacher}-s0" / "metrics.json").read_text())
    assert student["config"]["teacher_run"] == f"teacher-{teacher}-s0"
    # The KD tables (the tables_kd rule's command, on these runs) say where the teacher came from.
    metrics = [str(classify / r / "metrics.json") for r in [f"teacher-{teacher}-s0", *students]]
    tables = tmp_path / "tables"
    subprocess.run(["kdpipe", "tables-kd", "--metrics", *metrics, "--cost-metrics", *metrics,
                    "--runs", str(tables / "kd_runs.csv"), "--summary", str(tables / "kd_summary.csv"),
                    "--headline", str(tables / "kd_metrics.json")], check=True, capture_output=True)
    summary = pd.read_csv(tables / "kd_summary.csv")
    row = summary[summary["method"] == "teacher"].iloc[0]
    assert row["imported_from"] == http_server.url("cifar_teachers.tar")
    assert row["best_top1_mean"] == pytest.approx(m["best"]["top1"])
