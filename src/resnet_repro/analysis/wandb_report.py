"""A W&B Report of one sweep: the paper's Figure 6 curves and Table 6, built from the logged runs.

    from resnet_repro.analysis.wandb_report import build_wandb_report
    report = build_wandb_report("my-team", "resnet_repro", "degradation-2026-11-23_10-00-00-000000")
    report.save()          # the only step that talks to W&B

Training logs each sweep as one W&B run group (``group=<experiment>-<sweep time>``), with the
resolved config nested (``model.depth``, ``model.residual``, ``seed``) and the run summary's
scalars (``final_train_err``, ``final_val_err``, ``params``, ``status``, ...). The report only
holds queries over those runs, so it fills in (and keeps updating) on the W&B side.

Building makes no network call: the report's entity is passed explicitly. Serializing the runsets
(``report._to_model()``, which ``save()`` does) looks up each runset's project id on W&B.

Config keys in panel groupings, filters and table columns use the W&B backend spelling, where
each top-level config key holds ``{"value": ...}``: ``model.depth`` is ``model.value.depth``.

Not reproduced: the paper's per-series styles (thin dashed training error, bold test error).
``LinePlot.line_marks`` / ``line_widths`` are keyed by ``"<run id>:<metric>"``, and grouped
series (mean over seeds per depth) have no run id known when the report is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ResnetReproError

if TYPE_CHECKING:
    import wandb_workspaces.reports.v2

EVAL_SPLITS = {"val_err": "validation", "test_err": "test"}
ERR_RANGE = (0, 20)  # the paper's Figure 6 y axis, in %
DEPTH, RESIDUAL, SEED = "model.depth", "model.residual", "seed"


def _backend_key(path: str) -> str:
    """A nested config path in W&B's stored form: ``model.depth`` -> ``model.value.depth``."""
    first, *rest = path.split(".")
    return ".".join([first, "value", *rest])


def _import_reports():
    try:
        import wandb_workspaces.reports.v2 as wr
        from wandb_workspaces import expr
    except ImportError as ex:
        raise ResnetReproError(
            f"W&B Reports need the wandb-workspaces package ({ex}): pip install wandb-workspaces"
        ) from None
    return wr, expr


def build_wandb_report(
    entity: str,
    project: str,
    group: str,
    *,
    title: str | None = None,
    table_markdown: str = "",
    verdict: str = "",
    eval_metric: str = "val_err",
) -> wandb_workspaces.reports.v2.Report:
    """A W&B Report (built, not saved) of the sweep logged as run group ``group``.

    ``eval_metric`` is the logged error of the reported split, ``val_err`` or ``test_err``: it is
    plotted next to ``train_err`` and its ``final_`` value is a Table 6 column. ``table_markdown``
    (our Table 6 beside the paper's) and ``verdict`` are added as text when given.
    """
    if eval_metric not in EVAL_SPLITS:
        raise ResnetReproError(f"eval_metric {eval_metric!r} is not one of {sorted(EVAL_SPLITS)}.")
    wr, expr = _import_reports()
    split = EVAL_SPLITS[eval_metric]

    def runset(name: str, *extra_filters, **kwargs) -> wr.Runset:
        """The sweep's runs (its W&B group), narrowed by ``extra_filters``."""
        return wr.Runset(
            entity=entity,
            project=project,
            name=name,
            filters=expr.And(expr.Metric("Group") == group, *extra_filters),
            **kwargs,
        )

    def figure6(variant: str, residual: bool) -> wr.PanelGrid:
        """One panel of the paper's Figure 6: error vs iterations, one line per depth."""
        plot = wr.LinePlot(
            title=f"{variant}: train_err and {eval_metric} (%), mean ± std over seeds",
            x="Step",
            y=["train_err", eval_metric],
            range_y=ERR_RANGE,
            title_x="iterations",
            title_y="error (%)",
            groupby=wr.Config(DEPTH),
            groupby_aggfunc="mean",
            groupby_rangefunc="stddev",
            max_runs_to_show=100,  # every seed of every depth feeds the mean
            legend_position="north",
            layout=wr.Layout(x=0, y=0, w=24, h=10),
        )
        # finished runs only: a crashed or diverged run's last rows must not pull a depth's mean
        rs = runset(
            f"{variant} networks",
            expr.Config(_backend_key(RESIDUAL)) == residual,
            expr.Metric("State") == "finished",
        )
        return wr.PanelGrid(runsets=[rs], panels=[plot])

    eval_final = f"final_{eval_metric}"
    pinned = [
        f"config:{_backend_key(DEPTH)}",
        f"config:{_backend_key(RESIDUAL)}",
        f"config:{SEED}.value",
    ]
    table6 = wr.PanelGrid(
        runsets=[
            runset(
                "Table 6 runs",
                groupby=[f"config.{RESIDUAL}", f"config.{DEPTH}"],
                order=[wr.OrderBy(wr.Config(_backend_key(DEPTH)), ascending=True)],
                pinned_columns=["run:displayName", *pinned],
                visible_columns=[
                    "summary:params",
                    "summary:final_train_err",
                    f"summary:{eval_final}",
                    "summary:status",
                ],
                lock_columns=True,
            )
        ]
    )

    blocks = [
        wr.H1(f"Sweep {group}"),
        wr.P(
            f"The runs of W&B group {group} in {entity}/{project}. Errors are in %; the "
            f"evaluation curve and column are {eval_metric}, the {split} error."
        ),
    ]
    if verdict.strip():
        blocks += [wr.H2("Verdict"), *(wr.P(p.strip()) for p in verdict.strip().split("\n\n"))]
    blocks += [
        wr.H2("Figure 6: training on CIFAR-10"),
        wr.P(
            f"One curve per depth and metric: the mean over seeds with a ±1 std band. In the "
            "paper thin dashed curves are training error and bold ones test error; here they "
            f"are the series named train_err and {eval_metric}."
        ),
        wr.H3("Plain networks"),
        figure6("plain", False),
        wr.H3("Residual networks"),
        figure6("ResNet", True),
        wr.H2("Table 6: classification error on CIFAR-10"),
        wr.P(f"Runs grouped by residual and depth; {eval_final} is the reported error."),
        table6,
    ]
    if table_markdown.strip():
        blocks += [
            wr.H3("Table 6, computed from the run records, next to the paper"),
            wr.MarkdownBlock(text=table_markdown.strip()),
        ]
    return wr.Report(
        entity=entity,
        project=project,
        blocks=blocks,
        title=(title or f"ResNet CIFAR-10 reproduction: {group}")[:128],
        description=f"He et al. 2016, Figure 6 and Table 6, sweep {group}",
    )
