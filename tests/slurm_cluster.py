"""A real single-node SLURM cluster on this machine, started and stopped by the tests.

Debian's ``slurm-wlm`` and ``munge`` packages (``.ci/run`` installs them). Everything the
cluster writes lives in one private folder: its own munge key and socket, its own
``slurm.conf`` (clients find it through ``SLURM_CONF``), state, spool, pid and log files, and
free TCP ports, so nothing of the machine's own configuration is read or changed and a second
cluster (another test session) cannot collide with it. The daemons run in the foreground
(``-D``) as children of the test process and are stopped at the end of the session.

How Snakemake's SLURM executor sees job states here: the plugin's ``squeue`` path
(``--slurm-status-command squeue``), not SLURM accounting. Accounting needs slurmdbd and a
MariaDB server, set up and seeded (``sacctmgr add cluster``) before every session: minutes of
start-up and two more daemons, for what ``squeue --states=all`` already answers as long as
slurmctld keeps finished jobs, that is ``MinJobAge`` seconds. So this cluster keeps them for
an hour (the plugin itself falls back to sacct when MinJobAge is shorter than three status
intervals). ``sacct`` stays installed but answers "accounting storage is disabled"; the test
profile names ``squeue`` explicitly instead of hiding ``sacct`` from PATH.

Each finished job is also written by slurmctld itself to a job-completion file
(``jobcomp/filetxt``): the scheduler's own ledger of what ran, with state and times, which
tests read to prove what SLURM (not Snakemake) saw.

One file lives outside that folder while the cluster runs: ``/etc/slurm/slurm.conf``, a symbolic
link to the cluster's configuration. Inside a job the executor's job step starts ``srun`` with
every ``SLURM_*`` variable removed except the job's ids, ``SLURM_CONF`` included
(snakemake-executor-plugin-slurm#164), so that ``srun`` finds the configuration only at its
default path. A machine with a SLURM configuration of its own there is left alone (the tests skip).

There are no GPUs in this cluster (no ``GresTypes``): a job asking for ``--gpus`` is refused
at submission, so tests must drop the training rule's GPU request.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

DAEMONS = ["munged", "mungekey", "slurmctld", "slurmd"]
CLIENTS = ["sbatch", "squeue", "scancel", "sinfo", "srun", "scontrol"]
SBIN = ["/usr/sbin", "/sbin"]
PARTITION = "debug"
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
ROOT_PREFIX = "kdpipe-slurm-"


def find_command(name: str) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN])
    return shutil.which(name, path=path)


def unavailable_reason() -> str | None:
    """Why the cluster cannot run on this machine, or None when it can."""
    missing = [name for name in DAEMONS + CLIENTS if find_command(name) is None]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install slurm-wlm munge, as .ci/run does)"
    if os.geteuid() != 0:
        return "not root: slurmd runs jobs as their user and must start as root"
    if SYSTEM_CONF.exists() and not _ours(SYSTEM_CONF):
        return f"{SYSTEM_CONF} exists: this machine has a SLURM configuration of its own"
    return None


def _ours(path: Path) -> bool:
    """A link this module made (to a test cluster's folder, live or left by a killed session)."""
    return path.is_symlink() and Path(os.readlink(path)).parent.name.startswith(ROOT_PREFIX)


def _alive(pid_file: Path) -> bool:
    """Whether the process whose id ``pid_file`` holds is running."""
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
    except PermissionError:  # another user's
        return True
    except (OSError, ValueError):
        return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_hardware() -> dict:
    """The node's line of slurm.conf as slurmd sees this machine (``slurmd -C``), CPUs to memory.

    Memory SLURM may hand out is what the machine has, less a tenth for the OS and the daemons.
    """
    hardware = {"CPUs": str(os.cpu_count() or 1)}
    proc = subprocess.run([find_command("slurmd"), "-C"], capture_output=True, text=True)
    if proc.returncode == 0 and proc.stdout.startswith("NodeName="):
        first = proc.stdout.splitlines()[0].split()[1:]
        hardware = dict(item.split("=", 1) for item in first if "=" in item)
    with open("/proc/meminfo") as f:
        total_kb = next(int(line.split()[1]) for line in f if line.startswith("MemTotal:"))
    hardware["RealMemory"] = str(int(total_kb / 1024 * 0.9))
    return hardware


@dataclass
class SlurmCluster:
    """A running cluster: ``env`` is what a client process (sbatch, snakemake) needs."""

    root: Path
    node: str
    hardware: dict  # CPUs, sockets, cores, threads, RealMemory (MB), as slurm.conf names them
    partition: str = PARTITION
    env: dict = field(default_factory=dict)
    processes: dict = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def jobcomp(self) -> Path:
        """slurmctld's record of every finished job (one line each, ``Key=Value`` fields)."""
        return self.root / "jobcomp.txt"

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        proc = subprocess.run(cmd, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr}{proc.stdout}\n{self.logs()}")
        return proc

    def completed_jobs(self) -> list[dict]:
        """slurmctld's job-completion records: JobId, JobName, JobState, StartTime, EndTime, ..."""
        if not self.jobcomp.exists():
            return []
        records = []
        for line in self.jobcomp.read_text().splitlines():
            record = {}
            for item in line.split():
                key, sep, value = item.partition("=")
                if sep:
                    record[key] = value
            if record:
                records.append(record)
        return records

    def logs(self, tail: int = 40) -> str:
        parts = []
        for path in (self.root / "munge" / "munged.log", self.root / "log" / "slurmctld.log",
                     self.root / "log" / "slurmd.log"):
            name = path.name
            if path.exists():
                lines = path.read_text(errors="replace").splitlines()[-tail:]
                parts.append(f"--- {name} (last {len(lines)} lines)\n" + "\n".join(lines))
        return "\n".join(parts)


def _write_conf(cluster: SlurmCluster, ctld_port: int, slurmd_port: int, munge_socket: Path) -> None:
    r = cluster.root
    cluster.conf.write_text(f"""\
# Generated by tests/slurm_cluster.py: a one-node cluster for the test session.
ClusterName=kdpipe-test
SlurmctldHost={cluster.node}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket}
CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc={cluster.jobcomp}
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
# Finished jobs stay visible to `squeue --states=all` (the executor's job states) for an hour.
MinJobAge=3600
# scancel: SIGTERM, then SIGKILL this many seconds later.
KillWait=5
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={cluster.node} NodeAddr=127.0.0.1 {" ".join(f"{k}={v}" for k, v in cluster.hardware.items())} State=UNKNOWN
PartitionName={cluster.partition} Nodes={cluster.node} Default=YES MaxTime=INFINITE State=UP
""")


def _spawn(cluster: SlurmCluster, name: str, cmd: list[str], **kw) -> None:
    log = open(cluster.root / "log" / f"{name}.out", "w")
    cluster.processes[name] = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **cluster.env}, start_new_session=True, **kw
    )


def _wait(what: str, ready, cluster: SlurmCluster, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in cluster.processes.items():
            if proc.poll() is not None:
                out = (cluster.root / "log" / f"{name}.out").read_text(errors="replace")
                raise RuntimeError(f"{name} exited ({proc.returncode}) while waiting for {what}:\n{out}\n{cluster.logs()}")
        if ready():
            return
        time.sleep(0.3)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}\n{cluster.logs()}")


def start_cluster(root: Path | None = None) -> SlurmCluster:
    """Start munged, slurmctld and slurmd; return once ``srun hostname`` answers."""
    root = Path(root or tempfile.mkdtemp(prefix=ROOT_PREFIX))
    # munged runs as the munge user and must reach its key and socket folder.
    os.chmod(root, 0o755)
    for sub in ("state", "spool", "run", "log", "munge"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    munge = pwd.getpwnam("munge")
    munge_dir = root / "munge"
    os.chmod(munge_dir, 0o700)
    os.chown(munge_dir, munge.pw_uid, munge.pw_gid)
    key, munge_socket = munge_dir / "munge.key", munge_dir / "munge.socket"
    cluster = SlurmCluster(root=root, node=socket.gethostname().split(".")[0], hardware=node_hardware())
    cluster.env = {"SLURM_CONF": str(cluster.conf), "PATH": os.pathsep.join([os.environ.get("PATH", ""), *SBIN])}
    try:
        # A key of the cluster's own, readable by munge only (munged refuses anything looser).
        subprocess.run([find_command("mungekey"), "--create", "--keyfile", str(key)], check=True,
                       capture_output=True, text=True)
        os.chown(key, munge.pw_uid, munge.pw_gid)
        os.chmod(key, 0o400)
        _spawn(cluster, "munged", [
            "runuser", "-u", "munge", "--", find_command("munged"), "--foreground", "--force",
            f"--key-file={key}", f"--socket={munge_socket}", f"--pid-file={munge_dir}/munged.pid",
            f"--log-file={munge_dir}/munged.log", f"--seed-file={munge_dir}/munged.seed",
        ])
        _wait("munged", lambda: munge_socket.exists(), cluster)
        ctld_port = free_port()
        _write_conf(cluster, ctld_port, next(p for p in iter(free_port, None) if p != ctld_port), munge_socket)
        if SYSTEM_CONF.is_symlink() or SYSTEM_CONF.exists():
            if not _ours(SYSTEM_CONF):
                raise RuntimeError(f"{SYSTEM_CONF} exists: this machine has a SLURM configuration of its own")
            other = Path(os.readlink(SYSTEM_CONF)).parent
            if _alive(other / "run" / "slurmctld.pid"):
                # Its jobs' srun would read our configuration and ask our slurmctld about their jobs.
                raise RuntimeError(f"another test cluster is running ({other}): one SLURM test session at a time")
            SYSTEM_CONF.unlink()  # left by a session that was killed
        SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
        SYSTEM_CONF.symlink_to(cluster.conf)
        _spawn(cluster, "slurmctld", [find_command("slurmctld"), "-D", "-i", "-f", str(cluster.conf)])
        _wait("slurmctld", lambda: cluster.run("scontrol", "ping", check=False).returncode == 0, cluster)
        _spawn(cluster, "slurmd", [find_command("slurmd"), "-D", "-f", str(cluster.conf), "-N", cluster.node])
        _wait(
            "the node to be idle",
            lambda: cluster.run("sinfo", "-h", "-N", "-o", "%t", check=False).stdout.strip() in ("idle", "mix", "alloc"),
            cluster,
        )
        out = cluster.run("srun", "-N1", "-n1", "-t", "1", "hostname", timeout=60).stdout.strip()
        if out != socket.gethostname():
            raise RuntimeError(f"srun hostname answered {out!r}\n{cluster.logs()}")
    except BaseException:
        stop_cluster(cluster)
        raise
    return cluster


def stop_cluster(cluster: SlurmCluster, keep_files: bool = False) -> None:
    """Cancel what is left, stop the daemons (newest first) and remove the cluster's folder."""
    if "slurmctld" in cluster.processes and cluster.processes["slurmctld"].poll() is None:
        cluster.run("scancel", "--full", "--user", pwd.getpwuid(os.geteuid()).pw_name, check=False, timeout=30)
    for name in reversed(list(cluster.processes)):
        proc = cluster.processes[name]
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    cluster.processes.clear()
    if SYSTEM_CONF.is_symlink() and Path(os.readlink(SYSTEM_CONF)) == cluster.conf:
        SYSTEM_CONF.unlink()
    if not keep_files:
        shutil.rmtree(cluster.root, ignore_errors=True)
