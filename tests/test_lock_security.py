"""GPU lock files on a shared workstation, tried as a hostile second user would (issue 19, item 1).

Two real users: the tests run as root (here and in CI) and play the other user, ``nobody``, with
``setpriv``. The job is root, which makes the attack worst (root may write any file). What must
hold: a lock directory squatted by another user, or a symlink, is refused with one ``kdpipe:``
message; a lock file kdpipe did not make is never written, truncated or chmod-ed; another user's
real lock file still locks.
"""

import errno
import fcntl
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from kdpipe import cli, devices
from kdpipe.devices import LOCK_DIR_ENV, SIMULATED_ENV, DeviceError, claim_slot, placement

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(devices.__file__).resolve().parents[1]  # where `import kdpipe` finds this code
SETPRIV = shutil.which("setpriv")
AS_NOBODY = [SETPRIV or "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
SECRET = b"SECRET DATA of the job's user\n"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="playing a second user (nobody) needs root"),
    pytest.mark.skipif(SETPRIV is None, reason="setpriv (util-linux) is needed to run as nobody"),
]


def nobody(script: str) -> None:
    """Run a shell script as the other user."""
    proc = subprocess.run([*AS_NOBODY, "sh", "-c", script], cwd="/", capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr


def nobody_python(code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run Python as the other user, importing this checkout's kdpipe (devices needs no torch to claim)."""
    for python in (sys.executable, shutil.which("python3")):
        probe = subprocess.run([*AS_NOBODY, python, "-c", "import kdpipe.devices"], cwd="/", capture_output=True,
                               env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=60)
        if probe.returncode == 0:
            return subprocess.run([*AS_NOBODY, python, "-c", code, *args], cwd="/", capture_output=True, text=True,
                                  env={**os.environ, "PYTHONPATH": str(SRC), **(env or {})}, timeout=60)
    pytest.skip("no Python that user nobody may run imports kdpipe here")


@pytest.fixture
def shared_tmp():
    """A world-writable sticky directory like /tmp, where both users may create things."""
    base = Path(tempfile.mkdtemp(prefix="kdpipe-locktest-"))
    os.chmod(base, 0o1777)
    yield base
    shutil.rmtree(base)


@pytest.fixture
def victim(shared_tmp):
    """A private file of the job's user, in a folder of its own (0700) on the same file system."""
    home = shared_tmp / "home"
    home.mkdir(mode=0o700)
    path = home / "precious.txt"
    path.write_bytes(SECRET)
    os.chmod(path, 0o600)
    return path


def untouched(path: Path) -> None:
    st = os.stat(path)
    assert path.read_bytes() == SECRET
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()


def one_line(err: str) -> str:
    assert err.startswith("kdpipe: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_a_squatted_directory_with_a_planted_symlink_is_safe(shared_tmp, victim, monkeypatch, capsys):
    """Issue 19's attack: nobody makes the lock directory 1777 and plants gpu-0.lock -> the victim.
    The directory is a shared sticky one, so it is used; the planted link is skipped, never followed."""
    locks = shared_tmp / "kdpipe-gpu-locks"
    nobody(f"mkdir -m 1777 {locks} && ln -s {victim} {locks}/gpu-0.lock")
    with claim_slot(["0", "1"], 1, locks) as claimed:
        assert claimed == (1, "1", 0)
    assert f"lock file {locks / 'gpu-0.lock'} is a symbolic link" in capsys.readouterr().err
    with pytest.raises(DeviceError, match=rf"no usable GPU lock file in {locks} \(gpu-0.lock is a symbolic link"):
        with claim_slot(["0"], 1, locks):
            pass
    # The same through the job's own path: the default lock directory from the environment.
    monkeypatch.setenv(SIMULATED_ENV, "0")
    monkeypatch.setenv(LOCK_DIR_ENV, str(locks))
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    with pytest.raises(DeviceError, match=str(locks)):
        with placement("cuda"):
            pass
    untouched(victim)
    assert os.readlink(locks / "gpu-0.lock") == str(victim)
    assert sorted(os.listdir(locks)) == ["gpu-0.lock", "gpu-1.lock"]  # gpu-1.lock: the lock kdpipe made


def test_planted_links_in_a_trusted_directory_are_skipped_and_never_written(shared_tmp, victim, capsys):
    """root's sticky directory (as kdpipe makes it): others may still plant files in it. A symlink
    (planted by nobody) and a hard link (protected_hardlinks stops nobody here, so root plants it
    for the test) are skipped with a warning, never opened for writing; the next free GPU is claimed."""
    locks = shared_tmp / "locks"
    locks.mkdir()
    os.chmod(locks, 0o1777)
    nobody(f"ln -s {victim} {locks}/gpu-0.lock")
    os.link(victim, locks / "gpu-1.lock")
    with claim_slot(["0", "1", "2"], 1, locks) as claimed:
        assert claimed == (2, "2", 0)
    err = capsys.readouterr().err
    assert f"lock file {locks / 'gpu-0.lock'} is a symbolic link" in err
    assert f"lock file {locks / 'gpu-1.lock'} is a hard link to another file" in err
    # Only planted files left: a clear error instead of waiting forever.
    with pytest.raises(DeviceError, match=rf"no usable GPU lock file in {locks} \(gpu-0.lock is a symbolic link; "
                                          r"gpu-1.lock is a hard link to another file\): remove those files"):
        with claim_slot(["0", "1"], 1, locks):
            pass
    untouched(victim)
    assert stat.S_IMODE(os.stat(locks / "gpu-2.lock").st_mode) == 0o644  # the one kdpipe made


def _alone_run(tmp_path: Path) -> list[str]:
    """`kdpipe train` arguments for the tiny preset's plain student, on whatever device is free."""
    from kdpipe import dvc_stages, plan

    cfg, _ = dvc_stages.load_config(ROOT, ["presets/demo.yaml", "presets/tiny.yaml"])
    run = {**plan.training_runs(cfg)[("classify", "alone-resnet8-s0")], "device": "auto"}
    for name in ("train.pt", "test.pt"):
        (tmp_path / name).write_bytes(b"")  # never read: the device is claimed first
    out = tmp_path / "run"
    return ["train", "--run-config", json.dumps(run), "--train", str(tmp_path / "train.pt"),
            "--test", str(tmp_path / "test.pt"), "--model", str(out / "model.pt"),
            "--metrics", str(out / "metrics.json"), "--history", str(out / "history.csv"),
            "--resume", str(out / "resume.pt")]


def test_another_users_private_directory_stops_the_job_on_one_line(shared_tmp, tmp_path, monkeypatch, capsys):
    locks = shared_tmp / "kdpipe-gpu-locks"
    nobody(f"mkdir -m 700 {locks}")
    monkeypatch.setenv(SIMULATED_ENV, "0")
    monkeypatch.setenv(LOCK_DIR_ENV, str(locks))
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert cli.main(_alone_run(tmp_path)) == 1
    err = one_line(capsys.readouterr().err)
    assert err.startswith(f"kdpipe: GPU lock directory {locks} belongs to nobody (uid ")
    assert f"set {LOCK_DIR_ENV} to a directory of your own" in err and f"or remove {locks}" in err
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_roots_private_directory_refuses_another_user_cleanly(shared_tmp):
    """The other way round: the directory is acceptable (root's) but nobody may not use it."""
    locks = shared_tmp / "locks"
    locks.mkdir(mode=0o700)
    code = ("import sys\nfrom kdpipe.devices import DeviceError, claim_slot\n"
            "try:\n    with claim_slot(['0'], 1, sys.argv[1]):\n        print('claimed')\n"
            "except DeviceError as err:\n    print(f'kdpipe: {err}')\n")
    proc = nobody_python(code, str(locks))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout == (f"kdpipe: GPU lock directory {locks} is not searchable by you (permission denied); "
                           f"set {LOCK_DIR_ENV} to a directory of your own (every job that shares these GPUs must "
                           f"use the same one), or remove {locks}\n")
    assert os.listdir(locks) == []


def _protected_regular_open(real_open):
    """os.open as the kernel behaves with fs.protected_regular=1 (on by default on systemd distributions):
    O_CREAT without O_EXCL on an existing file of another user in a sticky world-writable directory fails."""
    def opener(path, flags, mode=0o777, *, dir_fd=None):
        if flags & os.O_CREAT and not flags & os.O_EXCL:
            try:
                st = os.stat(path, dir_fd=dir_fd, follow_symlinks=False)
                parent = os.fstat(dir_fd) if dir_fd is not None else os.stat(Path(path).parent)
            except FileNotFoundError:
                pass
            else:
                sticky_shared = parent.st_mode & stat.S_ISVTX and parent.st_mode & stat.S_IWOTH
                if sticky_shared and st.st_uid not in (os.geteuid(), parent.st_uid):
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), path)
        return real_open(path, flags, mode, dir_fd=dir_fd)
    return opener


@pytest.mark.parametrize("protected_regular", ["kernel", "emulated"])
def test_another_users_lock_file_still_locks(shared_tmp, monkeypatch, protected_regular):
    """nobody's lock file (as its kdpipe job would leave it) in root's sticky directory: root's job opens
    it without O_CREAT, so fs.protected_regular (read from the kernel, or emulated when it is off
    here) does not stop it, and the lock is shared: while nobody holds gpu-0, root gets gpu-1."""
    if protected_regular == "emulated":
        monkeypatch.setattr(devices.os, "open", _protected_regular_open(os.open))
    locks = shared_tmp / "locks"
    locks.mkdir()
    os.chmod(locks, 0o1777)
    nobody(f"touch {locks}/gpu-0.lock {locks}/gpu-1.lock")
    before = {n: os.stat(locks / n) for n in ("gpu-0.lock", "gpu-1.lock")}
    # --no-fork: flock becomes the sleep that holds the lock. (Forked, as with --close, the child could
    # still hold the lock for a moment after flock is killed, on a busy machine, and gpu-0 seem taken.)
    holder = subprocess.Popen([*AS_NOBODY, "flock", "--exclusive", "--no-fork", str(locks / "gpu-0.lock"), "sleep", "30"],
                              cwd="/")
    try:
        probe = os.open(locks / "gpu-0.lock", os.O_RDONLY)
        try:  # wait until nobody holds it
            for _ in range(200):
                try:
                    fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(probe, fcntl.LOCK_UN)
                except BlockingIOError:
                    break
                assert holder.poll() is None
                subprocess.run(["sleep", "0.05"])
            else:
                raise AssertionError("nobody's flock never took the lock")
        finally:
            os.close(probe)
        with claim_slot(["0", "1"], 1, locks) as claimed:
            assert claimed == (1, "1", 0)
    finally:
        holder.kill()
        holder.wait()
    with claim_slot(["0", "1"], 1, locks) as claimed:
        assert claimed == (0, "0", 0)
    for name, st in before.items():  # never written, truncated or chmod-ed
        now = os.stat(locks / name)
        assert (now.st_uid, now.st_mode, now.st_size, now.st_mtime_ns) == (st.st_uid, st.st_mode, 0, st.st_mtime_ns)


def test_a_lock_file_kdpipe_made_is_shared_with_other_users(shared_tmp, monkeypatch):
    """Made by root's job with a private umask in the shared default directory, it is still 0644:
    nobody's job can open and lock it."""
    monkeypatch.setattr(tempfile, "tempdir", str(shared_tmp))  # the system temp directory, as /tmp
    monkeypatch.delenv(LOCK_DIR_ENV, raising=False)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    locks = shared_tmp / "kdpipe-gpu-locks"
    old = os.umask(0o077)
    try:
        with claim_slot(["0"], 1):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(locks).st_mode) == 0o1777  # root's lock directory is shared, like /tmp
    assert stat.S_IMODE(os.stat(locks / "gpu-0.lock").st_mode) == 0o644
    code = ("import sys\nfrom kdpipe.devices import claim_slot\n"
            "with claim_slot(['0'], 1, sys.argv[1]) as c:\n    print(c)\n")
    proc = nobody_python(code, str(locks))
    assert proc.returncode == 0 and proc.stdout == "(0, '0', 0)\n", proc.stderr


def test_another_users_unreadable_lock_file_is_skipped_not_a_traceback(shared_tmp):
    """A lock file nobody cannot open (root's, 0600): nobody's claim skips that slot with a warning,
    and stops with one message when no slot is left."""
    locks = shared_tmp / "locks"
    locks.mkdir()
    os.chmod(locks, 0o1777)
    (locks / "gpu-0.lock").touch(mode=0o600)
    os.chmod(locks / "gpu-0.lock", 0o600)
    code = ("import sys\nfrom kdpipe.devices import DeviceError, claim_slot\n"
            "try:\n    with claim_slot(sys.argv[2].split(','), 1, sys.argv[1]) as c:\n        print(c)\n"
            "except DeviceError as err:\n    print(f'kdpipe: {err}')\n")
    proc = nobody_python(code, str(locks), "0,1")
    assert proc.stdout == "(1, '1', 0)\n"
    assert proc.stderr == (f"kdpipe: skipping GPU 0 slot 0: lock file {locks / 'gpu-0.lock'} cannot be opened "
                           "(Permission denied): kdpipe's lock files are plain files any user may open; remove it to "
                           "use that slot\n")
    proc = nobody_python(code, str(locks), "0")
    assert proc.stdout == (f"kdpipe: no usable GPU lock file in {locks} (gpu-0.lock cannot be opened (Permission "
                           f"denied)): remove those files, or set {LOCK_DIR_ENV} to a directory of your own\n")


def test_a_lock_directory_that_is_a_symlink_is_refused(shared_tmp):
    real = shared_tmp / "real"
    real.mkdir(mode=0o755)
    link = shared_tmp / "kdpipe-gpu-locks"
    nobody(f"ln -s {real} {link}")
    with pytest.raises(DeviceError, match=f"GPU lock directory {link} is a symbolic link, not a directory"):
        with claim_slot(["0"], 1, link):
            pass
    assert os.listdir(real) == []


@pytest.mark.parametrize("mode, words", [(0o777, "is writable by other users without the sticky bit (mode 777"),
                                         (0o770, "is writable by other users without the sticky bit (mode 770")])
def test_a_directory_others_may_write_without_the_sticky_bit_is_refused(tmp_path, mode, words):
    locks = tmp_path / "locks"
    locks.mkdir()
    os.chmod(locks, mode)
    with pytest.raises(DeviceError, match=re.escape(words)):
        with claim_slot(["0"], 1, locks):
            pass
    assert os.listdir(locks) == []
