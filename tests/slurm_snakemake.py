"""``snakemake`` for the SLURM test cluster: the same command line, with the executor's status
checks kept at most STATUS_CHECK_CAP seconds apart.

snakemake-executor-plugin-slurm waits 10 s longer after every round of status checks that finds no
job finished (up to 180 s), a backoff made for jobs of hours. This cluster's jobs last seconds, so
the backoff alone would add minutes to the test run while the node sits idle. Nothing else changes:
the executor, the profile and the jobs are the real ones.
"""

import sys

from snakemake_executor_plugin_slurm import Executor
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor

STATUS_CHECK_CAP = 3  # seconds

_interval = RemoteExecutor.next_seconds_between_status_checks
Executor.next_seconds_between_status_checks = property(
    lambda self: min(_interval.fget(self), STATUS_CHECK_CAP), _interval.fset)

if __name__ == "__main__":
    from snakemake.cli import main

    sys.argv[0] = "snakemake"
    sys.exit(main())
