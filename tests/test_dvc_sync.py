"""kdpipe.dvc_sync's decisions from `dvc status`, on hand-written stages and statuses."""

import pytest

from kdpipe.dvc_sync import downstream, plan_sync, pulled_without_records, snakemake_args

STAGES = {
    "data": {"cmd": "snakemake d --cores all --configfile presets/demo.yaml", "deps": ["src/a.py"],
             "outs": [{"data/prepared/x": {"persist": True}}]},
    "classify": {"cmd": "snakemake classify --cores all", "deps": ["src/b.py", "data/prepared/x"],
                 "outs": [{"results/x/classify": {"persist": True}}, {"results/logs/train/x-classify-a.log": {}}]},
    "autoencoder": {"cmd": "snakemake autoencoder --cores all", "deps": ["data/prepared/x"],
                    "outs": [{"results/x/autoencoder": {"persist": True}}]},
    "tables": {"cmd": "snakemake tables --cores all", "deps": ["results/x/classify", "results/x/autoencoder"],
               "outs": [{"results/tables": {"persist": True}}]},
    "report": {"cmd": "snakemake results/report.pdf --cores all", "deps": ["results/tables"],
               "outs": [{"results/report.pdf": {"persist": True}}]},
}
ALL = set(STAGES)


def test_everything_matching_the_lock_is_clean():
    plan = plan_sync(STAGES, {}, ALL)
    assert plan.clean == list(STAGES) and not plan.stale and not plan.missing and not plan.unrecorded


def test_downstream_follows_outputs_into_deps():
    after = downstream(STAGES)
    assert after["data"] == {"classify", "autoencoder", "tables", "report"}
    assert after["classify"] == {"tables", "report"}
    assert after["report"] == set()


def test_changed_parameter_makes_the_stage_and_everything_after_it_stale():
    status = {"classify": [{"changed deps": {"presets/demo.yaml": {"classify.kd.temperature": "modified"}}}]}
    plan = plan_sync(STAGES, status, ALL)
    assert set(plan.stale) == {"classify", "tables", "report"}
    assert plan.stale["tables"] == ["after classify"]
    assert plan.clean == ["data", "autoencoder"]


def test_changed_code_and_command_are_stale():
    assert set(plan_sync(STAGES, {"autoencoder": [{"changed deps": {"src/b.py": "modified"}}]}, ALL).stale) == {
        "autoencoder", "tables", "report"}
    assert "report" in plan_sync(STAGES, {"report": [{"changed command": True}]}, ALL).stale


def test_missing_outputs_and_missing_upstream_are_not_stale():
    """Outputs refused as corrupt or not pulled: the lock still vouches for what is here."""
    status = {"classify": [{"changed outs": {"results/x/classify": "not in cache"}}],
              "tables": [{"changed deps": {"results/x/classify": "deleted"}}]}
    plan = plan_sync(STAGES, status, ALL)
    assert not plan.stale
    assert plan.missing == {"classify": ["results/x/classify: not in cache"]}
    assert "tables" in plan.clean


@pytest.mark.parametrize("what", ["modified", "new"])
def test_outputs_changed_here_are_refused(what):
    plan = plan_sync(STAGES, {"classify": [{"changed outs": {"results/x/classify": what}}]}, ALL)
    assert plan.unrecorded == {"classify": [f"results/x/classify: {what}"]}


def test_stage_never_recorded_is_refused():
    plan = plan_sync(STAGES, {}, ALL - {"report"})
    assert plan.unrecorded == {"report": ["not recorded in dvc.lock"]}


def test_configfiles_come_from_the_stage_command():
    assert snakemake_args(STAGES["data"]) == ["--configfile", "presets/demo.yaml"]
    assert snakemake_args(STAGES["classify"]) == []


def test_pulled_without_records(tmp_path, monkeypatch):
    monkeypatch.delenv("KDPIPE_DVC_SYNC", raising=False)
    assert not pulled_without_records(tmp_path)  # no dvc.lock: not a DVC checkout
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    assert not pulled_without_records(tmp_path)  # nothing pulled yet: `dvc repro` from empty
    (tmp_path / "results" / "tables").mkdir(parents=True)
    assert pulled_without_records(tmp_path)
    (tmp_path / ".snakemake" / "metadata").mkdir(parents=True)
    (tmp_path / ".snakemake" / "metadata" / "cmVzdWx0cw==").write_text("{}")
    assert not pulled_without_records(tmp_path)
