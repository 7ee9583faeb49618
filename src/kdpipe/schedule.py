"""Which training job starts first: the critical path (Snakemake ``priority`` of the train rule).

Students wait for their teacher, so a teacher must start before any job that nothing waits for;
among jobs of one tier, the longer chain (the job's own expected time plus the longest job
waiting for it) starts first, which packs the rest around it. Snakemake runs, among ready jobs,
the one with the highest priority: this holds on a workstation (``--cores``, ``--resources gpu``)
and on SLURM (jobs are submitted in priority order), and with one GPU it means all teachers first.

Expected times are rough, at the paper's shapes on one GPU: seconds per epoch of 50,000 CIFAR
images (or 2,975 Cityscapes pairs at 256 x 256) measured on an H200 with the eager fp32 loop
(issue 11's table), scaled by width, image size and the number of training images. A classifier's
time is its architecture's ``epoch_s`` (kdpipe.architectures; the config check refuses one without);
a multi-exit run's its method's time (SELF_DISTILL_EPOCH_S) times its architecture's factor
(MULTI_EXIT_FACTOR): a method or architecture missing from either is refused, never given another's
time. Only their order matters here.
"""

from kdpipe import architectures, plan

CIFAR_TRAIN_IMAGES = 50_000
CITYSCAPES_TRAIN_PAIRS = 2_975
# Multi-exit ResNet-18 at width 64. self_distill and baseline measured (issue 11); deep_supervision
# an ESTIMATE, not measured: CE at every exit, so the exits' backward that baseline skips, without
# BYOT's KL and feature terms (cheap elementwise work) — between the two, near BYOT.
SELF_DISTILL_EPOCH_S = {"self_distill": 4.9, "baseline": 3.6, "deep_supervision": 4.6}
# Seconds per epoch of a multi-exit architecture relative to ResNet-18 (kdpipe.models.multi_exit).
# resnet34 and resnet50 are ESTIMATES, not measured: the ratio of the whole multi-exit network's
# multiply-accumulates (all four exits, width 64, 32 x 32; exit_costs) to ResNet-18's, 1.27 G and
# 3.11 G against 0.67 G; a bottleneck network usually runs slower than its MACs say.
MULTI_EXIT_FACTOR = {"resnet18": 1.0, "resnet34": 1.9, "resnet50": 4.65}
AE_EPOCH_S = {"distill": 5.5, "baseline": 4.3}  # 2,975 pairs at 256 x 256, width 32
TEACHER_TIER = 1_000_000  # a job others wait for beats any job nothing waits for


def classify_epoch_s(arch: str) -> float:
    """The registry's seconds per epoch of 50,000 CIFAR images (eager fp32, H200) for ``arch``."""
    seconds = architectures.get(arch).epoch_s
    if seconds is None:  # config_checks.architectures_have_epoch_times refuses such a config first
        raise ValueError(f"architecture {arch!r} has no epoch_s in kdpipe.architectures")
    return seconds


def self_distill_epoch_s(method: str, arch: str) -> float:
    """Seconds per epoch of 50,000 CIFAR images at width 64 for a multi-exit run (eager fp32, H200)."""
    if method not in SELF_DISTILL_EPOCH_S:  # config_checks.self_distill_has_epoch_times refuses it first
        raise ValueError(f"self-distillation method {method!r} has no expected epoch time in "
                         f"kdpipe.schedule.SELF_DISTILL_EPOCH_S")
    if arch not in MULTI_EXIT_FACTOR:
        raise ValueError(f"multi-exit architecture {arch!r} has no time factor in kdpipe.schedule.MULTI_EXIT_FACTOR")
    return SELF_DISTILL_EPOCH_S[method] * MULTI_EXIT_FACTOR[arch]


def train_images(config: dict, run: dict) -> int:
    if run["family"] == "autoencoder":
        data = plan.ae_data(config)
        return int(data.get("num_train", CITYSCAPES_TRAIN_PAIRS))
    if run.get("train_subset"):
        return int(run["train_subset"])
    entry = plan.dataset_config(config, run["dataset"])
    return int(entry.get("num_train", CIFAR_TRAIN_IMAGES))


def expected_seconds(config: dict, run: dict) -> float:
    """A job's expected training time on one GPU, eager fp32 (rough; for ordering only)."""
    epochs = run["train"]["epochs"]
    if run["family"] == "classify":
        per = classify_epoch_s(run["arch"])
        if run.get("teacher"):
            per += classify_epoch_s(run["teacher"]) / 4  # a teacher forward per batch: ~1/5 to 1/3 of its step (issue 11)
        return epochs * per * train_images(config, run) / CIFAR_TRAIN_IMAGES
    if run["family"] == "self_distill":
        per = self_distill_epoch_s(run["method"], run["arch"])
        return epochs * per * (run["width"] / 64) ** 2 * train_images(config, run) / CIFAR_TRAIN_IMAGES
    size = plan.ae_data(config)["size"]
    per = AE_EPOCH_S["distill" if run["variant"]["pairs"] else "baseline"]
    return (epochs * per * (size / 256) ** 2 * (run["width"] / 32) ** 2
            * train_images(config, run) / CITYSCAPES_TRAIN_PAIRS)


def train_priorities(config: dict, runs: dict | None = None) -> dict[tuple[str, str], float]:
    """``{(family, run): priority}`` for the train rule: higher starts first.

    A job others wait for gets ``TEACHER_TIER`` plus its chain's expected seconds; any other job
    its expected seconds (fractions kept: the demo's jobs are short).
    """
    runs = runs if runs is not None else plan.training_runs(config)
    own = {key: expected_seconds(config, run) for key, run in runs.items()}
    waiting: dict[tuple[str, str], list] = {key: [] for key in runs}
    for key, run in runs.items():
        if run.get("teacher_run"):
            waiting[(key[0], run["teacher_run"])].append(key)

    def chain(key) -> float:
        return own[key] + max((chain(k) for k in waiting[key]), default=0.0)

    return {key: (TEACHER_TIER if waiting[key] else 0) + round(min(chain(key), TEACHER_TIER - 1), 3)
            for key in runs}
