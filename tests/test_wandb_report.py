"""The W&B Report of a sweep is built offline: its blocks, panels, filters and serialized form.

No test talks to W&B: ``wandb.Api`` and the reports module's ``_get_api`` are made to raise, and
the one lookup that serializing a runset needs (its project's internal id) is answered by a fake.
"""

from __future__ import annotations

import json
import sys

import pytest

wr = pytest.importorskip("wandb_workspaces.reports.v2")
interface = pytest.importorskip("wandb_workspaces.reports.v2.interface")
from wandb_workspaces import expr  # noqa: E402

from resnet_repro.analysis.wandb_report import build_wandb_report  # noqa: E402
from resnet_repro.errors import ResnetReproError  # noqa: E402

ENTITY, PROJECT = "my-team", "resnet_repro"
GROUP = "degradation-2026-11-23_10-00-00-000000"
TABLE_MD = "| model | ours | paper |\n|---|---|---|\n| ResNet-20 | 8.61 | 8.75 |"
VERDICT = "Plain nets degrade with depth; ResNets do not."


class NetworkCall(AssertionError):
    pass


def _refuse(*args, **kwargs):
    raise NetworkCall("the test tried to reach W&B")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any route to the W&B API fails the test."""
    import wandb

    monkeypatch.setattr(wandb, "Api", _refuse)
    monkeypatch.setattr(interface, "_get_api", _refuse)
    monkeypatch.setattr(interface, "execute_graphql", _refuse)


@pytest.fixture
def offline_lookup(monkeypatch):
    """Answer the runsets' project-id lookup (``_to_model``) offline; record what was asked."""
    asked = []

    class OfflineApi:  # no attributes: any real use of it fails
        __slots__ = ()

    def lookup(api, query, variables=None):
        assert isinstance(api, OfflineApi)
        asked.append((query, dict(variables or {})))
        return {"project": {"internalId": "UHJvamVjdDox"}}

    monkeypatch.setattr(interface, "_get_api", OfflineApi)
    monkeypatch.setattr(interface, "execute_graphql", lookup)
    return asked


def build(**kwargs):
    kwargs = {"table_markdown": TABLE_MD, "verdict": VERDICT, **kwargs}
    return build_wandb_report(ENTITY, PROJECT, GROUP, **kwargs)


def grids(report):
    return [b for b in report.blocks if isinstance(b, wr.PanelGrid)]


def figure6_grids(report):
    return [g for g in grids(report) if any(isinstance(p, wr.LinePlot) for p in g.panels)]


def table6_grid(report):
    (grid,) = [g for g in grids(report) if g.runsets[0].groupby]
    return grid


def filter_terms(runset) -> dict:
    """``{(section, name): value}`` of a runset's filter, all of them joined by AND."""
    items = expr.filters_tree_to_v2(expr.expr_to_filters(runset.filters))["filters"]
    assert all(i.get("connector", "AND") == "AND" and i["op"] == "=" for i in items)
    return {(i["key"]["section"], i["key"]["name"]): i["value"] for i in items}


def texts(report) -> list[str]:
    return [
        b.text
        for b in report.blocks
        if isinstance(b, (wr.H1, wr.H2, wr.H3, wr.P, wr.MarkdownBlock))
    ]


# --- the report object ----------------------------------------------------------------------
def test_report_is_built_offline_with_title_entity_and_project():
    report = build()
    assert isinstance(report, wr.Report)
    assert (report.entity, report.project) == (ENTITY, PROJECT)
    assert GROUP in report.title and len(report.title) <= 128
    assert report.id == ""  # never saved
    assert build(title="My sweep").title == "My sweep"
    assert len(build(title="x" * 300).title) == 128


def test_heading_description_and_verdict():
    report = build()
    assert isinstance(report.blocks[0], wr.H1) and GROUP in report.blocks[0].text
    intro = report.blocks[1].text
    assert GROUP in intro and "%" in intro and "val_err" in intro and "validation" in intro
    assert VERDICT in texts(report)
    assert VERDICT not in texts(build(verdict=""))
    # a verdict of several paragraphs stays several paragraphs
    assert {"First.", "Second."} <= set(texts(build(verdict="First.\n\nSecond.\n")))


def test_figure6_line_plots():
    report = build()
    f6 = figure6_grids(report)
    assert len(f6) == 2
    for grid in f6:
        (plot,) = grid.panels
        assert plot.x == "Step"
        assert plot.y == ["train_err", "val_err"]
        assert tuple(plot.range_y) == (0, 20)
        assert plot.groupby == wr.Config("model.depth")
        assert (plot.groupby_aggfunc, plot.groupby_rangefunc) == ("mean", "stddev")


def test_figure6_filters_plain_and_residual_runs_of_the_group():
    runsets = [g.runsets[0] for g in figure6_grids(build())]
    terms = [filter_terms(rs) for rs in runsets]
    assert all(t[("run", "group")] == GROUP for t in terms)
    assert sorted(t[("config", "model.value.residual")] for t in terms) == [False, True]
    assert all(
        t[("run", "state")] == "finished" for t in terms
    )  # unfinished runs stay out of the means
    assert all((rs.entity, rs.project) == (ENTITY, PROJECT) for rs in runsets)


def test_table6_runs_table():
    grid = table6_grid(build())
    (rs,) = grid.runsets
    assert filter_terms(rs) == {("run", "group"): GROUP}
    assert rs.groupby == ["config.model.residual", "config.model.depth"]
    columns = rs.pinned_columns + rs.visible_columns
    for col in [
        "config:model.value.depth",
        "config:model.value.residual",
        "config:seed.value",
        "summary:params",
        "summary:final_train_err",
        "summary:final_val_err",
        "summary:status",
    ]:
        assert col in columns
    assert not any("test_err" in c for c in columns)
    assert rs.lock_columns


def test_table6_markdown_block_only_when_given():
    blocks = [b for b in build().blocks if isinstance(b, wr.MarkdownBlock)]
    assert [b.text for b in blocks] == [TABLE_MD]
    assert not [b for b in build(table_markdown="").blocks if isinstance(b, wr.MarkdownBlock)]
    # the markdown follows the Table 6 runs table
    report = build()
    assert report.blocks.index(blocks[0]) > report.blocks.index(table6_grid(report))


def test_eval_metric_test_err_switches_the_metric():
    report = build(eval_metric="test_err")
    for grid in figure6_grids(report):
        assert grid.panels[0].y == ["train_err", "test_err"]
    rs = table6_grid(report).runsets[0]
    assert "summary:final_test_err" in rs.visible_columns
    assert "summary:final_val_err" not in rs.visible_columns
    assert "test error" in report.blocks[1].text


def test_unknown_eval_metric_is_refused():
    with pytest.raises(ResnetReproError, match="eval_metric"):
        build(eval_metric="val_loss")


def test_missing_wandb_workspaces_names_the_fix(monkeypatch):
    for mod in ("wandb_workspaces", "wandb_workspaces.reports", "wandb_workspaces.reports.v2"):
        monkeypatch.setitem(sys.modules, mod, None)
    with pytest.raises(ResnetReproError) as err:
        build()
    msg = str(err.value)
    assert "pip install wandb-workspaces" in msg and "\n" not in msg


# --- serialized form -----------------------------------------------------------------------
def test_report_serializes_without_saving(offline_lookup):
    report = build()
    model = report._to_model()
    data = json.loads(model.model_dump_json(by_alias=True, exclude_none=True))
    # the only lookups were the runsets' project ids, answered offline
    assert len(offline_lookup) == 3
    assert all(v == {"entityName": ENTITY, "projectName": PROJECT} for _, v in offline_lookup)
    assert all("project" in q for q, _ in offline_lookup)

    assert data["displayName"] == report.title
    assert data["project"] == {"name": PROJECT, "entityName": ENTITY}
    blocks = data["spec"]["blocks"]
    grids_ = [b for b in blocks if b["type"] == "panel-grid"]
    assert len(grids_) == 3
    plots = [p for g in grids_ for p in g["metadata"]["panelBankSectionConfig"]["panels"]]
    assert len(plots) == 2
    for p in plots:
        assert p["viewType"] == "Run History Line Plot"
        cfg = p["config"]
        assert cfg["metrics"] == ["train_err", "val_err"] and cfg["xAxis"] == "_step"
        assert (cfg["yAxisMin"], cfg["yAxisMax"]) == (0, 20)
        assert cfg["groupBy"] == "model.value.depth" and cfg["aggregate"] is True
        assert (cfg["groupAgg"], cfg["groupArea"]) == ("mean", "stddev")
    runsets = [rs for g in grids_ for rs in g["metadata"]["runSets"]]
    for rs in runsets:
        assert rs["project"] == {"name": PROJECT, "entityName": ENTITY, "id": "UHJvamVjdDox"}
        assert {
            "key": {"section": "run", "name": "group"},
            "op": "=",
            "value": GROUP,
            "disabled": False,
        } in rs["filters"]["filters"]
    groupings = [[k["name"] for k in rs["grouping"]] for rs in runsets]
    assert ["model.value.residual", "model.value.depth"] in groupings
    assert any(b["type"] == "markdown-block" and b["content"] == TABLE_MD for b in blocks)


def test_building_twice_gives_equal_content(offline_lookup):
    """Deterministic apart from the generated panel / runset ids."""

    def strip(data):
        if isinstance(data, dict):
            return {k: strip(v) for k, v in data.items() if k not in ("id", "__id__")}
        if isinstance(data, list):
            return [strip(v) for v in data]
        return data

    a, b = (json.loads(build()._to_model().model_dump_json(by_alias=True)) for _ in range(2))
    assert strip(a) == strip(b)
