"""resnet-report --wandb-report: the report is built for the sweep's group and saved; a failing
save is one clear error that leaves the local report complete. Nothing here reaches W&B."""

import pytest

from resnet_repro.analysis import report

pytestmark = pytest.mark.slow  # every test here reads the tiny sweep (conftest.py)


@pytest.fixture
def saved(monkeypatch):
    import wandb_workspaces.reports.v2 as wr

    calls = []

    def fake_save(self, draft=False, clone=False):
        calls.append(self)
        self.id = "abc123"
        return self

    monkeypatch.setattr(wr.Report, "save", fake_save)
    return calls


def test_wandb_report_is_built_for_the_sweep_group_and_saved(tiny_sweep, tmp_path, saved, capsys):
    report.main(
        [str(tiny_sweep), "-o", str(tmp_path / "rep"), "--wandb-report", "mylab/resnet_repro"]
    )
    (rep,) = saved
    assert (rep.entity, rep.project) == ("mylab", "resnet_repro")
    text = repr(rep)  # the whole built report: blocks, runsets, filters
    assert f"degradation-{tiny_sweep.name}" in text  # the W&B group training gave the sweep
    assert "| ResNet-14 |" in text  # our Table 6 rides along as Markdown
    assert "W&B Report saved" in capsys.readouterr().out
    assert (tmp_path / "rep" / "table6.md").is_file()


def test_explicit_group_wins(tiny_sweep, tmp_path, saved):
    report.main(
        [
            str(tiny_sweep),
            "-o",
            str(tmp_path / "rep"),
            "--wandb-report",
            "mylab/p",
            "--group",
            "my-group",
        ]
    )
    assert "my-group" in repr(saved[0])


def test_a_failing_save_is_one_clear_error_and_the_local_report_stays(
    tiny_sweep, tmp_path, monkeypatch, capsys
):
    import wandb_workspaces.reports.v2 as wr

    def boom(self, draft=False, clone=False):
        raise ConnectionError("no route to api.wandb.ai")

    monkeypatch.setattr(wr.Report, "save", boom)
    with pytest.raises(SystemExit) as ex:
        report.main([str(tiny_sweep), "-o", str(tmp_path / "rep"), "--wandb-report", "mylab/p"])
    assert ex.value.code == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("resnet-report: error: Could not save the W&B Report to mylab/p")
        and "Traceback" not in err
    )
    assert (tmp_path / "rep" / "report.md").is_file() and (tmp_path / "rep" / "fig6.png").is_file()


def test_bad_wandb_target_is_refused(tiny_sweep, tmp_path, capsys):
    with pytest.raises(SystemExit) as ex:
        report.main([str(tiny_sweep), "-o", str(tmp_path / "rep"), "--wandb-report", "no-slash"])
    assert ex.value.code == 2 and "is not ENTITY/PROJECT" in capsys.readouterr().err
