# Teacher → students (alone, KD soft, KD hard) on CIFAR-shaped data.
# A run folder results/<set>/classify/<run>/ holds model.pt, metrics.json and history.csv;
# <run> reads as teacher-resnet56-s0, alone-resnet20-s0, kd_soft-resnet20-from-resnet56-s0.


rule train_classifier:
    """Teachers and students trained alone: cross-entropy only, no teacher input."""
    input:
        train="data/prepared/{dataset}/train.pt",
        test="data/prepared/{dataset}/test.pt",
    output:
        model="results/{dataset}/classify/{run}/model.pt",
        metrics="results/{dataset}/classify/{run}/metrics.json",
        history="results/{dataset}/classify/{run}/history.csv",
    params:
        run=classify_run_json,
        # Per-epoch checkpoint, kept when a job dies so its rerun resumes; deleted on success.
        resume=lambda wc: f"{run_dir(wc.dataset, 'classify', wc.run)}/resume.pt",
    log:
        "results/logs/train_classifier/{dataset}-{run}.log",
    benchmark:
        "results/benchmarks/train_classifier/{dataset}-{run}.tsv"
    wildcard_constraints:
        dataset=alternatives([CLASSIFY_DATASET]),
        run=r"(teacher|alone)-[^/]+",
    threads: 1
    resources:
        gpu=1,
    conda:
        "../../envs/kdpipe.yaml"
    shell:
        "kdpipe train-classifier --run-config {params.run:q} --threads {threads} "
        "--train {input.train} --test {input.test} --resume {params.resume} "
        "--model {output.model} --metrics {output.metrics} --history {output.history} > {log} 2>&1"


rule distill_classifier:
    """Students distilled from their teacher's model.pt (soft or hard targets)."""
    input:
        train="data/prepared/{dataset}/train.pt",
        test="data/prepared/{dataset}/test.pt",
        teacher=teacher_model,
    output:
        model="results/{dataset}/classify/{run}/model.pt",
        metrics="results/{dataset}/classify/{run}/metrics.json",
        history="results/{dataset}/classify/{run}/history.csv",
    params:
        run=classify_run_json,
        resume=lambda wc: f"{run_dir(wc.dataset, 'classify', wc.run)}/resume.pt",
    log:
        "results/logs/distill_classifier/{dataset}-{run}.log",
    benchmark:
        "results/benchmarks/distill_classifier/{dataset}-{run}.tsv"
    wildcard_constraints:
        dataset=alternatives([CLASSIFY_DATASET]),
        run=r"kd_(soft|hard)-[^/]+",
    threads: 1
    resources:
        gpu=1,
    conda:
        "../../envs/kdpipe.yaml"
    shell:
        "kdpipe train-classifier --run-config {params.run:q} --threads {threads} "
        "--train {input.train} --test {input.test} --teacher {input.teacher} --resume {params.resume} "
        "--model {output.model} --metrics {output.metrics} --history {output.history} > {log} 2>&1"
