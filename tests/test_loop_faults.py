"""Faults a training job meets: a loss that turns non-finite, a damaged or old checkpoint, the temp
files of a killed writer, a full disk. In-process and fast: a tiny family, the real loop and io."""

import errno
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from kdpipe import io
from kdpipe.errors import DiskFullError, NonFiniteLossError
from kdpipe.models import build_model
from kdpipe.training.classify import Classifier
from kdpipe.training.loop import Recipe, first_non_finite, fit, save_resume, state_digest
from report_stubs import skip_sections, write_stub_tables

CPU = torch.device("cpu")


class Tiny:
    """A linear classifier on 64 fixed points whose ``term`` is multiplied by ``bad`` from epoch ``bad_from``
    (1-based): its gradient then ruins the weights and every term follows a step later. With ``added``
    ``bad`` is added instead: a constant, the weights stay finite and only that term (and the total) is hit."""

    score_key = "acc"

    def __init__(self, bad_from=None, bad=float("nan"), term="kl", added=False):
        torch.manual_seed(0)
        self.model = nn.Linear(4, 3)
        g = torch.Generator().manual_seed(1)
        self.x, self.y = torch.randn(64, 4, generator=g), torch.randint(0, 3, (64,), generator=g)
        self.bad_from, self.bad, self.term, self.added = bad_from, bad, term, added
        self.epoch = 0  # set by the loop

    def train_batches(self, generator):
        perm = torch.randperm(64, generator=generator)
        for i in range(0, 64, 16):
            yield self.x[perm[i:i + 16]], self.y[perm[i:i + 16]]

    def loss(self, batch):
        x, y = batch
        out = self.model(x)
        terms = {"ce": F.cross_entropy(out, y), "kl": 0.01 * out.pow(2).mean()}
        if self.bad_from is not None and self.epoch + 1 >= self.bad_from:
            terms[self.term] = terms[self.term] + self.bad if self.added else terms[self.term] * self.bad
        return terms["ce"] + terms["kl"], terms

    def evaluate(self):
        return {"acc": float((self.model(self.x).argmax(1) == self.y).float().mean())}


RECIPE = Recipe(epochs=5, batch_size=16, lr=0.1)
CFG = {"run": "tiny-s0", "train": {"epochs": 5, "batch_size": 16, "lr": 0.1}}


def run(family, resume, recipe=RECIPE, cfg=CFG):
    return fit(family, recipe, seed=0, device=CPU, resume_path=resume, run_config=cfg, desc=cfg["run"])


def without_seconds(history):
    return [{k: v for k, v in row.items() if k != "seconds"} for row in history]


def saved(resume) -> dict:
    return torch.load(resume, map_location="cpu", weights_only=True)


# --- a non-finite loss ---------------------------------------------------------------------------


def test_blame_goes_to_the_term_that_went_first_then_to_a_named_term():
    nan, inf = float("nan"), float("inf")
    # every term non-finite by the end of the epoch: the one with the fewest finite steps went first
    assert first_non_finite({"loss": nan, "ce": nan, "kl": nan}, {"loss": 3, "ce": 4, "kl": 3}) == "kl"
    assert first_non_finite({"loss": nan, "ce": nan, "kl": nan}, {"loss": 2, "ce": 4, "kl": 3}) == "loss"
    assert first_non_finite({"loss": inf, "ce": 1.0, "kl": 2.0}, {"loss": 9, "ce": 10, "kl": 10}) == "loss"
    assert first_non_finite({"loss": -inf, "ce": -inf}, {"loss": 0, "ce": 0}) == "ce"
    assert first_non_finite({"loss": 3.0, "ce": 1.0, "kl": 2.0}, {"loss": 4, "ce": 4, "kl": 4}) is None


def test_nan_term_in_epoch_3_stops_with_resume_at_epoch_2(tmp_path):
    resume = tmp_path / "resume.pt"
    with pytest.raises(NonFiniteLossError) as err:
        run(Tiny(bad_from=3), resume)
    assert str(err.value) == (f"run tiny-s0: loss term 'kl' is nan in epoch 3; stopping. {resume} holds epoch 2 "
                              "(the last finite one); fix the config (e.g. lower lr) and rerun")
    state = saved(resume)
    assert state["epoch"] == 2 and [row["epoch"] for row in state["history"]] == [1, 2]
    # ... and it is the state a clean 2-epoch run ends at
    clean = Tiny()
    out = run(clean, tmp_path / "clean.pt", Recipe(epochs=2, batch_size=16, lr=0.1))
    assert without_seconds(state["history"]) == without_seconds(out.history)
    for k, v in clean.model.state_dict().items():
        assert torch.equal(state["model"][k], v), k


def test_inf_in_first_epoch_saves_nothing(tmp_path):
    resume = tmp_path / "resume.pt"
    with pytest.raises(NonFiniteLossError, match=r"^run tiny-s0: loss term 'ce' is inf in epoch 1; stopping\. "
                                                 r"no epoch was saved; fix the config"):
        run(Tiny(bad_from=1, bad=float("inf"), term="ce", added=True), resume)
    assert not resume.exists()


# --- checkpoints carry a checksum ------------------------------------------------------------------


def _data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)


def classifier():
    x, y = _data()
    torch.manual_seed(0)
    return Classifier(build_model("resnet8", 10), (x, y), (x[:32], y[:32]), method="alone", batch_size=32,
                      device=CPU)


CLS_CFG = {"run": "alone-resnet8-s0", "train": {"epochs": 2, "batch_size": 32, "lr": 0.05}}


def _flip_bytes_in_largest_tensor(path: Path) -> None:
    """Flip 16 bytes in the middle of the biggest tensor storage (``<archive>/data/<n>``) of a torch zip."""
    with zipfile.ZipFile(path) as z:
        info = max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
        assert info.compress_type == zipfile.ZIP_STORED
    raw = bytearray(path.read_bytes())
    name_len, extra_len = (int.from_bytes(raw[info.header_offset + o:info.header_offset + o + 2], "little")
                           for o in (26, 28))
    start = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    raw[start:start + 16] = bytes(b ^ 0xFF for b in raw[start:start + 16])
    path.write_bytes(bytes(raw))


def test_flipped_bytes_in_a_tensor_restart_the_run(tmp_path, capsys):
    recipe = Recipe.from_dict(CLS_CFG["train"])
    straight = classifier()
    out_a = run(straight, tmp_path / "a.pt", recipe, CLS_CFG)
    resume = tmp_path / "b.pt"
    run(classifier(), resume, recipe, CLS_CFG)  # leaves its checkpoint at epoch 2 (fit never removes it)
    assert saved(resume)["epoch"] == 2
    _flip_bytes_in_largest_tensor(resume)
    saved(resume)  # torch.load itself accepts the damage: only the checksum finds it
    capsys.readouterr()
    again = classifier()
    out_b = run(again, resume, recipe, CLS_CFG)
    assert f"kdpipe: checkpoint {resume} fails its checksum (damaged); starting from epoch 0" in capsys.readouterr().err
    assert out_b.resumed_from_epoch == 0
    assert without_seconds(out_b.history) == without_seconds(out_a.history)
    for k, v in straight.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[k], v), k


def test_intact_checkpoint_resumes(tmp_path, capsys):
    resume = tmp_path / "resume.pt"
    cfg = {**CFG, "train": {**CFG["train"], "epochs": 2}}
    run(Tiny(), resume, Recipe(epochs=2, batch_size=16, lr=0.1), cfg)
    out = run(Tiny(), resume, Recipe(epochs=3, batch_size=16, lr=0.1), cfg)  # same config: its checkpoint
    assert out.resumed_from_epoch == 2 and [row["epoch"] for row in out.history] == [1, 2, 3]
    assert f"resuming from {resume} after epoch 2" in capsys.readouterr().err


def test_checkpoint_without_checksum_is_not_trusted(tmp_path, capsys):
    resume = tmp_path / "resume.pt"
    run(Tiny(), resume, Recipe(epochs=2, batch_size=16, lr=0.1))
    state = saved(resume)
    del state["checksum"]  # what kdpipe wrote before checkpoints carried one
    io.atomic_save(state, resume)
    out = run(Tiny(), resume, Recipe(epochs=2, batch_size=16, lr=0.1))
    assert out.resumed_from_epoch == 0
    assert (f"kdpipe: checkpoint {resume} has no checksum (written by an older kdpipe), so it cannot be verified; "
            "starting from epoch 0") in capsys.readouterr().err


def test_digest_sees_every_part_of_the_state():
    state = {"epoch": 2, "model": {"w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor(3)},
             "history": [{"epoch": 1, "loss": 0.5}], "best": (1, None)}
    d = state_digest(state)
    assert d == state_digest({**state})
    changed = [
        {**state, "epoch": 3},
        {**state, "model": {"w": torch.arange(6.0).reshape(3, 2), "n": torch.tensor(3)}},  # shape
        {**state, "model": {"w": torch.arange(6.0).reshape(2, 3).double(), "n": torch.tensor(3)}},  # dtype
        {**state, "model": {"w": torch.arange(6.0).reshape(2, 3), "n": torch.tensor(4)}},  # a byte
        {**state, "history": [{"epoch": 1, "loss": 0.25}]},
        {**state, "best": [1, None]},
    ]
    assert len({d, *map(state_digest, changed)}) == len(changed) + 1
    # a non-contiguous view hashes as its values
    t = torch.arange(6.0).reshape(3, 2).t()
    assert state_digest({"w": t}) == state_digest({"w": t.contiguous()})


def test_save_resume_digest_matches_what_torch_load_returns(tmp_path):
    path = tmp_path / "r.pt"
    model = build_model("resnet8", 10)  # BatchNorm's int64 counters, float weights
    save_resume({"epoch": 1, "model": model.state_dict(), "history": [{"loss": float("nan")}]}, path)
    state = saved(path)
    assert state.pop("checksum") == state_digest(state)


# --- temp files ----------------------------------------------------------------------------------


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_next_writer_removes_a_killed_writers_temp_files(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")
    dead = dead_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = tmp_path / f".model.pt.tmp-{dead}"
        stale.write_bytes(b"half a file")
        kept = {
            "live": tmp_path / f".model.pt.tmp-{live.pid}",
            "other output": tmp_path / f".resume.pt.tmp-{dead}",
            "not the pattern": tmp_path / f".model.pt.tmp-{dead}.bak",
            "no dot": tmp_path / f"model.pt.tmp-{dead}",
        }
        for path in kept.values():
            path.write_bytes(b"x")
        victim = tmp_path / "victim.txt"
        victim.write_text("precious")
        link = tmp_path / f".model.pt.tmp-{dead + 1000000}"  # no such pid; its symlink is removed, never followed
        link.symlink_to(victim)
        folder = tmp_path / f".model.pt.tmp-{dead + 1000001}"
        folder.mkdir()
        io.atomic_save({"w": torch.ones(2)}, target)
    finally:
        live.kill()
        live.wait()
    assert not stale.exists()
    assert all(path.exists() for path in kept.values())
    assert not link.is_symlink() and victim.read_text() == "precious" and folder.is_dir()
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir() if ".tmp-" in p.name) == sorted(
        [p.name for p in kept.values()] + [folder.name])


def test_a_pid_we_may_not_signal_is_alive(tmp_path, monkeypatch):
    target = tmp_path / "history.csv"
    other = tmp_path / ".history.csv.tmp-4242"
    other.write_text("someone else's")

    def kill(pid, sig):
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(io.os, "kill", kill)
    io.atomic_write_text("a,b\n", target)
    assert other.exists()
    monkeypatch.setattr(io.os, "kill", lambda pid, sig: (_ for _ in ()).throw(ProcessLookupError()))
    io.atomic_write_text("a,b\n", target)
    assert not other.exists() and target.read_text() == "a,b\n"


def test_temp_names_are_unique_per_process(tmp_path):
    assert io._tmp_beside(tmp_path / "report.pdf").name == f".report.pdf.tmp-{os.getpid()}"


def _fd_name(fh) -> str:
    """The name of the file an open handle writes, as the kernel knows it (Linux)."""
    return os.readlink(f"/proc/self/fd/{fh.fileno()}")


def test_report_writes_through_its_own_temp_name(tmp_path, monkeypatch):
    import kdpipe.report.build as build
    from matplotlib.backends.backend_pdf import PdfPages

    write_stub_tables(tmp_path / "tables")
    out = tmp_path / "results" / "report.pdf"
    out.parent.mkdir()
    out.write_bytes(b"old report")
    stale = out.with_name(f".report.pdf.tmp-{dead_pid()}")
    stale.write_bytes(b"a killed build's half report")
    opened = []
    monkeypatch.setattr(build, "PdfPages", lambda fh, **kw: opened.append(Path(_fd_name(fh))) or PdfPages(fh, **kw))
    skip_sections(monkeypatch)
    build.build_report(out=out, name="tiny", tables_dir=tmp_path / "tables", figures_dir=tmp_path)
    assert opened == [out.with_name(f".report.pdf.tmp-{os.getpid()}")]
    assert out.read_bytes().startswith(b"%PDF") and not stale.exists()
    assert [p.name for p in out.parent.iterdir()] == ["report.pdf"]

    def broken(*a):
        raise ValueError("a section failed")

    monkeypatch.setattr(build, "jobs_appendix", broken)
    before = out.read_bytes()
    with pytest.raises(ValueError):
        build.build_report(out=out, name="tiny", tables_dir=tmp_path / "tables", figures_dir=tmp_path)
    assert out.read_bytes() == before and [p.name for p in out.parent.iterdir()] == ["report.pdf"]


# --- a full disk ---------------------------------------------------------------------------------


class FullAfter:
    """A file whose writes fail with ENOSPC once ``limit`` bytes are in it, as a full disk's do."""

    def __init__(self, fh, limit):
        self.fh, self.limit, self.n = fh, limit, 0

    def write(self, b):
        self.n += len(b)
        if self.n > self.limit:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.fh.write(b)

    def __getattr__(self, name):
        return getattr(self.fh, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.fh.close()


def _disk_full_open(monkeypatch, limit):
    """Writes to a temp file (opened by name or, as kdpipe.io does, on its descriptor) fill the disk."""
    real_open = open

    def fake_open(path, mode="r", *a, **kw):
        fh = real_open(path, mode, *a, **kw)
        return FullAfter(fh, limit) if "w" in mode and ".tmp-" in _fd_name(fh) else fh

    monkeypatch.setattr("builtins.open", fake_open)


def _free(path) -> str:
    return io._free_space(Path(path).parent)


def test_full_disk_during_torch_save_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    resume = tmp_path / "resume.pt"
    io.atomic_save({"epoch": 1, "w": torch.zeros(10)}, resume)
    before = resume.read_bytes()

    _disk_full_open(monkeypatch, limit=2000)
    with pytest.raises(DiskFullError) as err:
        io.atomic_save({"epoch": 2, "w": torch.zeros(100_000)}, resume)
    msg = str(err.value)
    # torch.save reports it as "[enforce fail at inline_container.cc] ... unexpected pos"; the OSError is its context
    assert isinstance(err.value.__cause__, RuntimeError)
    assert msg.startswith(f"cannot write {resume}: no space left on device; ")
    assert msg.endswith("free on its filesystem: free some space and rerun; the previous resume.pt is kept as it was")
    assert _free(resume) in msg
    assert resume.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["resume.pt"]


def test_torch_writer_failure_without_an_oserror_is_reported_too(tmp_path, monkeypatch):
    import torch.serialization

    def failing_save(obj, f, *a, **kw):
        f.write(b"PK")
        raise RuntimeError("PytorchStreamWriter failed writing file data/3: file write failed")

    monkeypatch.setattr(torch, "save", failing_save)
    target = tmp_path / "model.pt"
    with pytest.raises(DiskFullError, match=r"^cannot write .*model\.pt: the write failed \(PytorchStreamWriter "
                                            r"failed writing file data/3: file write failed\); .* free on its "
                                            r"filesystem: free some space and rerun$"):
        io.atomic_save({"w": torch.zeros(3)}, target)
    assert list(tmp_path.iterdir()) == []


def test_full_disk_writing_text_and_cli_line(tmp_path, monkeypatch, capsys):
    target = tmp_path / "metrics.json"
    target.write_text("{}\n")
    _disk_full_open(monkeypatch, limit=5)  # any write past 5 characters finds the disk full
    with pytest.raises(DiskFullError, match="metrics.json: no space left on device"):
        io.write_json({"a": 1}, target)
    assert target.read_text() == "{}\n" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]

    # through the command line: one kdpipe: line, no traceback
    from kdpipe.cli import main

    assert main(["tables-jobs", "--out", str(target)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"kdpipe: cannot write {target}: no space left on device; ")
    assert target.read_text() == "{}\n" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_other_errors_pass_through_and_remove_the_temp(tmp_path):
    with pytest.raises(Exception) as err:
        io.atomic_save({"f": lambda: 1}, tmp_path / "x.pt")  # cannot be pickled: a bug, not a full disk
    assert not isinstance(err.value, DiskFullError) and "lambda" in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_real_full_tmpfs(tmp_path):
    """A real 64 KiB tmpfs, where kdpipe runs as root and may mount one; skipped elsewhere."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        resume = mnt / "resume.pt"
        io.atomic_save({"w": torch.zeros(100)}, resume)
        before = resume.read_bytes()
        with pytest.raises(DiskFullError, match=rf"^cannot write {resume}: .* free on its filesystem") as err:
            io.atomic_save({"w": torch.zeros(100_000)}, resume)  # 400 kB into 64 kB
        assert "kept as it was" in str(err.value)
        assert resume.read_bytes() == before
        assert [p.name for p in mnt.iterdir()] == ["resume.pt"]
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
