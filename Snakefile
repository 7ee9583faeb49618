# kdpipe: knowledge-distillation experiments, from raw data to results/report.pdf.
#   snakemake results/report.pdf --cores 8 --resources gpu=2
#   snakemake results/report.pdf --cores 2 --configfile presets/demo.yaml
from snakemake.utils import min_version

min_version("9.27")  # the tested release: callable `priority:` (rule train)


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/teachers.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        "results/report.pdf",
    default_target: True


# Targets named after the groups a researcher thinks in (each DVC stage runs one of them):
#   snakemake classify --cores 8        every teacher and student model
rule classify:
    input:
        family_targets("classify"),


rule self_distill:
    input:
        family_targets("self_distill"),


rule autoencoder:
    input:
        family_targets("autoencoder"),


rule tables:
    input:
        rules.tables_kd.output,
        rules.tables_self_distill.output,
        rules.tables_autoencoder.output,
        rules.tables_jobs.output,
        rules.tables_reproduction.output,
        [sweep_table(name) for name in SWEEPS],


# Every sweep's table and chart (classify.sweeps), and only the runs they are made from:
#   snakemake sweeps --cores 2 --configfile presets/demo.yaml presets/sweep-demo.yaml
rule sweeps:
    input:
        [sweep_table(name) for name in SWEEPS],
        [sweep_figure(name) for name in SWEEPS],


rule figures:
    input:
        rules.figures_kd.output,
        rules.figures_self_distill.output,
        rules.figures_autoencoder.output,
        [sweep_figure(name) for name in SWEEPS],


# Tables, figures and the report made from a run that is now missing (a failed, killed or deleted
# run) are removed before Snakemake plans, and right after a failure, so they are rebuilt with it
# (kdpipe.stale: Snakemake alone would keep them and say "Nothing to be done").
sweep_stale_results()


onerror:
    sweep_stale_results(after_failure=True)
