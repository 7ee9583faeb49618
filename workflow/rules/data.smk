# Raw data → data/prepared/<set>/{train,test}.pt

# Downloads need the network, which a cluster's compute nodes often lack: run them where
# Snakemake runs (a SLURM login node), not as cluster jobs. Archives placed by hand under
# data/raw/<set>/ are checked by the prepare step before use, like downloaded ones.
localrules:
    download_cifar,
    download_pix2pix,



rule download_cifar:
    output:
        archive="data/raw/{dataset}/{archive}",
    params:
        url=lambda wc: dataset_entry(wc)["url"],
        md5=lambda wc: dataset_entry(wc)["md5"],
    log:
        "results/logs/download_cifar/{dataset}-{archive}.log",
    benchmark:
        "results/benchmarks/download_cifar/{dataset}-{archive}.tsv"
    wildcard_constraints:
        dataset=alternatives(CIFAR_SETS),
        archive=r"[^/]+\.tar\.gz",
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    resources:
        **RESOURCES["data"],
    shell:
        "kdpipe download --url {params.url:q} --md5 {params.md5:q} --out {output.archive:q} > {log:q} 2>&1"


rule prepare_cifar:
    input:
        archive=raw_archive,
    output:
        train="data/prepared/{dataset}/train.pt",
        test="data/prepared/{dataset}/test.pt",
    params:
        source=lambda wc: dataset_entry(wc)["source"],
        # Checked again before unpacking: the archive may have been placed by hand.
        md5=lambda wc: dataset_entry(wc)["md5"],
    log:
        "results/logs/prepare_cifar/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_cifar/{dataset}.tsv"
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    resources:
        **RESOURCES["data"],
    wildcard_constraints:
        dataset=alternatives(CIFAR_SETS),
    shell:
        "kdpipe prepare-cifar --source {params.source:q} --archive {input.archive:q} --md5 {params.md5:q} "
        "--train {output.train:q} --test {output.test:q} > {log:q} 2>&1"


rule prepare_synthetic:
    output:
        train="data/prepared/{dataset}/train.pt",
        test="data/prepared/{dataset}/test.pt",
    params:
        generator=lambda wc: json.dumps(
            {k: v for k, v in dataset_entry(wc).items() if k != "source"}, sort_keys=True
        ),
    log:
        "results/logs/prepare_synthetic/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_synthetic/{dataset}.tsv"
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    resources:
        **RESOURCES["data"],
    wildcard_constraints:
        dataset=alternatives(SYNTHETIC_SETS),
    shell:
        "kdpipe prepare-synthetic --params {params.generator:q} "
        "--train {output.train:q} --test {output.test:q} > {log:q} 2>&1"


# Cityscapes pairs (photo X, colour label map Y) for the autoencoder family.


rule prepare_street_scenes:
    output:
        train="data/prepared/{dataset}/train.pt",
        test="data/prepared/{dataset}/test.pt",
    params:
        generator=lambda wc: json.dumps(
            {k: AE_DATA[k] for k in ("num_train", "num_test", "size", "seed") if k in AE_DATA}, sort_keys=True
        ),
    log:
        "results/logs/prepare_street_scenes/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_street_scenes/{dataset}.tsv"
    wildcard_constraints:
        dataset=alternatives(AE_SETS["synthetic"]),
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    resources:
        **RESOURCES["data"],
    shell:
        "kdpipe prepare-street-scenes --params {params.generator:q} "
        "--train {output.train:q} --test {output.test:q} > {log:q} 2>&1"


rule download_pix2pix:
    output:
        archive="data/raw/{dataset}/{archive}",
    params:
        url=AE_DATA.get("url", ""),
        # Empty when unset: Snakemake then writes nothing after `--sha256`, which the command reads as none.
        sha256=AE_DATA.get("sha256") or "",
        # No checksum is published: the first download's sha256 is kept here and enforced later.
        record=lambda wc: f"data/raw/{wc.dataset}/{wc.archive}.sha256",
    log:
        "results/logs/download_pix2pix/{dataset}-{archive}.log",
    benchmark:
        "results/benchmarks/download_pix2pix/{dataset}-{archive}.tsv"
    wildcard_constraints:
        dataset=alternatives(AE_SETS["pix2pix"]),
        archive=r"[^/]+\.tar\.gz",
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    resources:
        **RESOURCES["data"],
    shell:
        "kdpipe download --url {params.url:q} --sha256 {params.sha256:q} --record-sha256 {params.record:q} "
        "--out {output.archive:q} > {log:q} 2>&1"


rule prepare_pix2pix:
    input:
        archive=lambda wc: f"data/raw/{wc.dataset}/{archive_name(wc.dataset)}",
    output:
        train="data/prepared/{dataset}/train.pt",
        test="data/prepared/{dataset}/test.pt",
    params:
        size=AE_DATA["size"],
        # Checked again before unpacking (the archive may have been placed by hand): the configured
        # sha256, else the one recorded at first use (recorded now if the file was placed by hand).
        sha256=AE_DATA.get("sha256") or "",
        record=lambda wc, input: f"{input.archive}.sha256",
    log:
        "results/logs/prepare_pix2pix/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_pix2pix/{dataset}.tsv"
    wildcard_constraints:
        dataset=alternatives(AE_SETS["pix2pix"]),
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    resources:
        **RESOURCES["data"],
    shell:
        "kdpipe prepare-pix2pix --archive {input.archive:q} --sha256 {params.sha256:q} --record-sha256 {params.record:q} "
        "--size {params.size:q} "
        "--train {output.train:q} --test {output.test:q} > {log:q} 2>&1"


rule prepare_cityscapes:
    input:
        # Placed by the user: downloading them needs a login at cityscapes-dataset.com.
        leftimg="data/raw/{dataset}/leftImg8bit_trainvaltest.zip",
        gtfine="data/raw/{dataset}/gtFine_trainvaltest.zip",
    output:
        train="data/prepared/{dataset}/train.pt",
        test="data/prepared/{dataset}/test.pt",
    params:
        size=AE_DATA["size"],
    log:
        "results/logs/prepare_cityscapes/{dataset}.log",
    benchmark:
        "results/benchmarks/prepare_cityscapes/{dataset}.tsv"
    wildcard_constraints:
        dataset=alternatives(AE_SETS["official"]),
    conda:
        "../../envs/kdpipe.yaml"
    threads: 1
    resources:
        **RESOURCES["data"],
    shell:
        "kdpipe prepare-cityscapes --leftimg {input.leftimg:q} --gtfine {input.gtfine:q} --size {params.size:q} "
        "--train {output.train:q} --test {output.test:q} > {log:q} 2>&1"
