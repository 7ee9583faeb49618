# Every trained model, of every family, is one job of this rule:
#   results/<set>/<family>/<run>/{model.pt, metrics.json, history.csv}
# <family>/<run> reads as classify/teacher-resnet56-s0, classify/kd_soft-resnet20-from-resnet56-s0,
# self_distill/self_distill-resnet18-s0, self_distill/baseline-resnet18-s0, ...
#
# Critical path first: a teacher (its students wait for it) starts before any job nothing waits
# for, then longer chains before shorter ones (kdpipe.schedule; expected times are rough).
from kdpipe import schedule

TRAIN_PRIORITY = schedule.train_priorities(config, RUNS)  # {(family, run): priority}


rule train:
    input:
        unpack(training_inputs),
    output:
        model="results/{dataset}/{family}/{run}/model.pt",
        metrics="results/{dataset}/{family}/{run}/metrics.json",
        history="results/{dataset}/{family}/{run}/history.csv",
    params:
        run=run_config_json,
        # Per-epoch checkpoint, kept when a job dies so its rerun resumes; deleted on success.
        resume=lambda wc: f"{run_dir(wc.dataset, wc.family, wc.run)}/resume.pt",
    log:
        "results/logs/train/{dataset}-{family}-{run}.log",
    benchmark:
        "results/benchmarks/train/{dataset}-{family}-{run}.tsv"
    wildcard_constraints:
        dataset=alternatives(USED_DATASETS),
        family="classify|self_distill|autoencoder",
        run=any_but(IMPORTED_RUNS),  # published teachers come from import_teacher (teachers.smk)
    threads: 1
    priority: lambda wildcards: TRAIN_PRIORITY.get((wildcards.family, wildcards.run), 0)
    resources:
        gpu=1,
        **RESOURCES["train"],
    conda:
        "../../envs/kdpipe.yaml"
    shell:
        "kdpipe train --run-config {params.run:q} --threads {threads:q} "
        "--train {input.train:q} --test {input.test:q} --teacher {input.teacher:q} --resume {params.resume:q} "
        "--model {output.model:q} --metrics {output.metrics:q} --history {output.history:q} > {log:q} 2>&1"
