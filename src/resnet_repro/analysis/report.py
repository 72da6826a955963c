"""From sweep to paper: Table 6, Figures 6 and 7, gradient-norm profiles and a degradation verdict.

    resnet-report runs/degradation/2026-11-23_10-00-00-000000          # writes <sweep>/report/
    resnet-report runs/degradation/<sweep> -o analysis/results/mine     # somewhere else
    resnet-report runs/degradation/<sweep> --wandb-report me/resnet_repro \\
        --group degradation-<sweep>

The report folder holds ``table6.md``/``.csv``, ``fig6.png``/``.pdf``, ``fig7.png``/``.pdf``,
``grad_norms.png``/``.pdf`` (when the runs recorded them), ``verdict.txt``, ``runs.csv``, a copy of
the sweep's manifest (``sweep_manifest.csv``) and ``report.md``, which shows them all.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..config import RUNTIME_KEYS, WARMUP_FROM_DEPTH
from ..data.registry import title
from ..errors import ResnetReproError
from ..models.registry import CIFAR_MODELS
from ..sweeps.sweep import MANIFEST_FILE
from .results import Results, collect, collect_grad_norms, collect_layer_stats

# He et al. 2016, Table 6 (CIFAR-10 test error %, params in millions). ResNet-110: best of 5 runs,
# with mean ± std in brackets.
PAPER_TABLE6 = {
    20: (0.27, 8.75),
    32: (0.46, 7.51),
    44: (0.66, 7.17),
    56: (0.85, 6.97),
    110: (1.7, 6.43),
    1202: (19.4, 7.93),
}
PAPER_NOTES = {110: "6.61 ± 0.16 mean of 5 runs (6.43 best)"}
VARIANTS = {"plain": "plain", "resnet": "ResNet"}
PANEL_TITLES = {"plain": "plain nets", "resnet": "residual nets (ResNets)"}
FIGSIZE, DPI = (11.0, 4.2), 150


def eval_split(runs: pd.DataFrame) -> str:
    """``test`` when every finished run had a test split, else ``val`` (never labelled as test)."""
    done = runs[runs["status"] == "completed"]
    rep = set(done["reported_error"].dropna()) or set(runs["reported_error"].dropna())
    return "test" if rep == {"test"} else "val"


def dataset_title(runs: pd.DataFrame) -> str:
    names = sorted(set(runs["dataset"].dropna()))
    return ", ".join(title(n) for n in names) or "runs"


def split_word(split: str) -> str:
    return "test" if split == "test" else "validation"


def _label(variant: str, depth) -> str:
    return f"{VARIANTS.get(variant, variant)}-{int(depth)}"


def _mean_std(s: pd.Series) -> tuple[float, float]:
    s = pd.to_numeric(s, errors="coerce").dropna()
    return (s.mean() if len(s) else math.nan), (s.std(ddof=1) if len(s) > 1 else math.nan)


# Config keys that may differ between the runs of one report: the net's depth and kind, the seed,
# names, the depth-dependent warm-up, and where/how runs ran (not what they computed).
POOLED_KEYS = {
    "model.depth",
    "model.n",
    "model.residual",
    "seed",
    "name",
    "experiment_name",
    "schedule.warmup",
} | RUNTIME_KEYS


def check_poolable(runs: pd.DataFrame) -> None:
    """Refuse to pool finished runs of different recipes, or the same net and seed twice."""
    done = runs[runs["status"] == "completed"]
    recipe = [c for c in done.columns if "." in c and c not in POOLED_KEYS]
    # compared as text: list values ([32000, 48000]) cannot be hashed; a key a run lacks (another
    # version of the schema) is no difference
    text = {c: done[c].dropna().map(str) for c in recipe}
    differ = {c: sorted(v.unique()) for c, v in text.items() if v.nunique() > 1}
    if differ:
        shown = "; ".join(f"{k}: {', '.join(v[:4])}" for k, v in list(differ.items())[:4])
        raise ResnetReproError(
            f"These runs do not share one recipe ({shown}), but Table 6 and the figures pool runs "
            f"by net and depth. Report each sweep on its own, or collect only runs that share a "
            f"recipe."
        )
    dup = done[done.duplicated(["variant", "depth", "seed"], keep=False)]
    if len(dup):
        r = dup.iloc[0]
        runs_ = ", ".join(
            dup[
                (dup["variant"] == r["variant"])
                & (dup["depth"] == r["depth"])
                & (dup["seed"] == r["seed"])
            ]["run"]
        )
        raise ResnetReproError(
            f"{_label(r['variant'], r['depth'])} seed {r['seed']} finished more than once "
            f"({runs_}): a mean over seeds would count it twice. Report the sweeps separately, or "
            f"remove one of them."
        )


# --- the recipe, against the paper's ------------------------------------------------------------
# He et al. 2016, §4.2: SGD, batch 128, lr 0.1 divided by 10 at 32k and 48k iterations, stop at
# 64k, momentum 0.9, weight decay 1e-4; ResNet-110 warms up (lr 0.01 until 80% training error).
PAPER_ITERATIONS, PAPER_MILESTONES = 64_000, (32_000, 48_000)
PAPER_SCHEDULE = (
    ("optimizer.lr", "lr", 0.1),
    ("trainer.batch_size", "batch", 128),
    ("optimizer.momentum", "momentum", 0.9),
    ("optimizer.weight_decay", "weight decay", 1e-4),
    ("schedule.gamma", "lr factor at a milestone", 0.1),
)


def _num(v):
    return f"{int(v):,}" if float(v).is_integer() and abs(v) >= 1000 else f"{v:g}"


def _milestones(run: pd.Series) -> tuple[int, ...] | None:
    """A run's milestones counted in iterations (an epoch schedule converted with its steps per
    epoch)."""
    ms = run.get("schedule.milestones")
    if not isinstance(ms, (list, tuple)):
        return None
    if run.get("schedule.unit") == "epochs" and run.get("schedule.iterations"):
        per_epoch = run["iterations_total"] / run["schedule.iterations"]
        return tuple(int(round(m * per_epoch)) for m in ms)
    return tuple(int(m) for m in ms)


@dataclass
class Recipe:
    """How the finished runs' recipe compares with the paper's.

    ``differs``: schedule items that are not the paper's (each says the paper's value); with any,
    the runs are not at the paper's schedule and cannot be compared with its numbers. ``notes``:
    other differences that leave the schedule the paper's (precision, protocol).
    """

    differs: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    iterations: int | None = None  # every finished run's length, when they share one

    @property
    def paper_schedule(self) -> bool:
        return not self.differs

    def headline(self) -> str:
        if self.paper_schedule:
            text = (
                "the paper's schedule (64,000 iterations, lr 0.1 divided by 10 at 32,000 and "
                "48,000, batch 128, momentum 0.9, weight decay 1e-4, warm-up for depth >= 110)"
            )
        else:
            text = "not the paper's schedule: " + "; ".join(self.differs)
        return f"Recipe: {text}." + (f" Also: {'; '.join(self.notes)}." if self.notes else "")

    def short(self) -> str:
        """One line for a figure."""
        its = self.iterations
        if self.paper_schedule:
            return "64,000 iterations, the paper's schedule"
        head = f"{its:,} iterations" if its else "mixed lengths"
        return (
            f"{head}: not the paper's schedule ({len(self.differs)} "
            f"difference{'s' if len(self.differs) > 1 else ''})"
        )


def recipe(runs: pd.DataFrame) -> Recipe:
    """Compare the finished runs' recipe (every run's, when none finished) with the paper's."""
    done = runs[runs["status"] == "completed"]
    done = done if len(done) else runs
    r = Recipe()
    its = sorted(set(int(v) for v in done["iterations_total"].dropna()))
    r.iterations = its[0] if len(its) == 1 else None
    if its != [PAPER_ITERATIONS]:
        r.differs.append(
            f"{' / '.join(f'{v:,}' for v in its) or 'unknown'} iterations (the paper: 64,000)"
        )
    ms = sorted({m for m in (_milestones(row) for _, row in done.iterrows()) if m is not None})
    if ms and ms != [PAPER_MILESTONES]:
        shown = " / ".join(", ".join(f"{m:,}" for m in v) or "none" for v in ms)
        r.differs.append(f"lr lowered at {shown} (the paper: 32,000, 48,000)")
    for key, word, paper in PAPER_SCHEDULE:
        vals = sorted(set(float(v) for v in done.get(key, pd.Series(dtype=float)).dropna()))
        if vals and vals != [paper]:
            r.differs.append(
                f"{word} {' / '.join(_num(v) for v in vals)} (the paper: {_num(paper)})"
            )
    if "schedule.warmup" in done:
        wrong = []
        for _, row in done.dropna(subset=["schedule.warmup", "depth"]).iterrows():
            want = row.get("model") in CIFAR_MODELS and int(row["depth"]) >= WARMUP_FROM_DEPTH
            if bool(row["schedule.warmup"]) != want:
                wrong.append(
                    f"{_label(row['variant'], row['depth'])} "
                    f"{'with' if row['schedule.warmup'] else 'without'}"
                )
        if wrong:
            r.differs.append(
                f"warm-up: {', '.join(sorted(set(wrong)))} (the paper: for depth >= 110 only)"
            )
    precisions = sorted(set(done.get("precision", pd.Series(dtype=str)).dropna()) - {"fp32"})
    if precisions:
        r.notes.append(f"{'/'.join(precisions)} autocast (the paper trained in fp32)")
    protocols = sorted(set(done["protocol"].dropna()) - {"paper"})
    if protocols:
        r.notes.append(
            f"dataset.protocol={'/'.join(protocols)} (the paper's analysis split is 45k/5k)"
        )
    return r


# --- Table 6 --------------------------------------------------------------------------------
def table6(runs: pd.DataFrame) -> pd.DataFrame:
    """Final error by variant and depth over the completed runs: mean, std (n-1) and n seeds."""
    split = eval_split(runs)
    rows = []
    for (variant, depth), g in runs.dropna(subset=["variant", "depth"]).groupby(
        ["variant", "depth"]
    ):
        done = g[g["status"] == "completed"]
        errs = pd.to_numeric(done[f"final_{split}_err"], errors="coerce").dropna()
        err_m, err_s = _mean_std(errs)
        tr_m, tr_s = _mean_std(done["final_train_err"])
        paper = PAPER_TABLE6.get(int(depth)) if variant == "resnet" else None
        params = pd.to_numeric(g["params"], errors="coerce").dropna()
        rows.append(
            {
                "net": _label(variant, depth),
                "variant": variant,
                "depth": int(depth),
                "params": int(params.iloc[0]) if len(params) else None,
                "seeds": len(errs),
                "unfinished": len(g) - len(done),
                "split": split,
                "error_mean": err_m,
                "error_std": err_s,
                "train_error_mean": tr_m,
                "train_error_std": tr_s,
                "paper_test_error": paper[1] if paper else None,
                "paper_params_m": paper[0] if paper else None,
                "paper_note": PAPER_NOTES.get(int(depth), "") if paper else "",
                "protocol": ",".join(sorted(set(map(str, done["protocol"].dropna())))) or None,
            }
        )
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["params"] = df["params"].astype("Int64")
    df["order"] = df["variant"].map({"plain": 0, "resnet": 1}).fillna(2)
    return df.sort_values(["order", "depth"]).drop(columns="order").reset_index(drop=True)


def _pm(m: float, s: float) -> str:
    if m is None or (isinstance(m, float) and math.isnan(m)):
        return "—"
    return f"{m:.2f}" if s is None or math.isnan(s) else f"{m:.2f} ± {s:.2f}"


def table6_markdown(t: pd.DataFrame, schedule: str = "", rec: Recipe | None = None) -> str:
    """Table 6 as markdown; with ``rec``, headed by how the recipe compares with the paper's, and
    the paper's column labelled a reference only when the runs used another schedule."""
    top = f"{rec.headline()}\n\n" if rec is not None else ""
    if t.empty:
        return top + "No finished runs to tabulate.\n"
    comparable = rec is None or rec.paper_schedule
    paper_head = (
        "paper: test error (%)"
        if comparable
        else "paper, 64k iterations: test error (%), reference only"
    )
    split = t["split"].iloc[0]
    head = (
        f"| net | params | seeds | ours: {split_word(split)} error (%) | ours: training error (%) "
        f"| {paper_head} |\n| --- | ---: | ---: | ---: | ---: | ---: |\n"
    )
    lines = []
    for r in t.itertuples():
        params = f"{r.params / 1e6:.2f}M" if pd.notna(r.params) and r.params else "—"
        paper = (
            "—"
            if r.paper_test_error is None or pd.isna(r.paper_test_error)
            else f"{r.paper_test_error:.2f}"
        )
        if r.paper_note:
            paper += f" ({r.paper_note})"
        seeds = f"{r.seeds}" + (f" (+{r.unfinished} unfinished)" if r.unfinished else "")
        lines.append(
            f"| {r.net} | {params} | {seeds} | {_pm(r.error_mean, r.error_std)} "
            f"| {_pm(r.train_error_mean, r.train_error_std)} | {paper} |"
        )
    note = (
        f"\nOur column is the final {split_word(split)} error (mean ± std over seeds, std with n-1)"
        + (f"; {schedule}" if schedule else "")
        + ". The paper's column is its CIFAR-10 test error; "
        "it lists no plain nets in Table 6 (they appear in its Fig. 6).\n"
    )
    if not comparable:
        note += (
            "These runs did not train on the paper's schedule, so the paper's column is a "
            "reference they cannot be compared with, not a comparison: see the recipe above.\n"
        )
    if split == "test" and "paper" in set(t.get("protocol", pd.Series(dtype=str)).dropna()):
        note += (
            "Our nets trained on 45k images (the paper protocol holds 5k out for validation); the "
            "paper's final models most likely trained on all 50k (dataset.protocol=full).\n"
        )
    if split == "val":
        note += (
            "Validation error (on images held out of the training set: 5k of CIFAR-10's 50k under "
            "the paper protocol) is not the paper's test error (the 10k test batch): compare "
            "trends and gaps, not the last decimal.\n"
        )
    return top + head + "\n".join(lines) + "\n" + note


# --- Figure 6 -------------------------------------------------------------------------------
def _curves(history: pd.DataFrame, runs: pd.DataFrame, metric: str) -> dict:
    """{(variant, depth): (iters, mean, std)} of a metric over each group's completed runs.

    Only iterations that every run of the group logged are kept, so the mean never switches
    between different sets of seeds.
    """
    done = runs[runs["status"] == "completed"]["run"]
    h = history[(history["metric"] == metric) & history["run"].isin(done)]
    out = {}
    for key, g in h.groupby(["variant", "depth"]):
        wide = g.pivot_table(index="iter", columns="run", values="value").dropna()
        out[key] = (
            wide.index.to_numpy(),
            wide.mean(axis=1).to_numpy(),
            wide.std(axis=1, ddof=1).to_numpy(),
        )
    return out


def _depth_colors(depths) -> dict:
    cmap = matplotlib.colormaps["tab10"]
    return {d: cmap(i % 10) for i, d in enumerate(sorted(set(int(d) for d in depths)))}


PAPER_FIG6_TOP = 20.0  # the paper's Fig. 6 shows errors from 0 to 20%


def figure6(
    history: pd.DataFrame, runs: pd.DataFrame, out: Path, rec: Recipe | None = None
) -> list[Path]:
    return _save(build_figure6(history, runs, rec), out / "fig6")


def fig6_top(highest: float) -> float:
    """Figure 6's error axis: the paper's 0-20% when the curves (``highest``, in %) fit in it, else
    widened to the next 10% above them (at most 100%)."""
    return PAPER_FIG6_TOP if highest <= PAPER_FIG6_TOP else min(100.0, math.ceil(highest / 10) * 10)


def iteration_axis(last: float) -> tuple[float, str]:
    """Figure 6's iteration axis for runs of up to ``last`` iterations: (the unit, its label), the
    paper's 1e4 for runs of 20k iterations or more, 1e3 from 2k (the 1/8 schedule reads 0-8), else
    plain iterations (a first look of 200 reads 0-200)."""
    if last >= 20_000:
        return 1e4, "iter. (1e4)"
    if last >= 2_000:
        return 1e3, "iter. (1e3)"
    return 1.0, "iteration"


def build_figure6(history: pd.DataFrame, runs: pd.DataFrame, rec: Recipe | None = None) -> Figure:
    """The paper's Fig. 6: training error thin dashed, eval error bold; plain and residual panels.

    The paper's 0-20% axis when the curves fit in it; otherwise the axis widens to the data and the
    caption says so. The schedule is stated on the figure; an empty panel says why.
    """
    rec = rec or recipe(runs)
    split = eval_split(runs)
    train, evals = _curves(history, runs, "train_err"), _curves(history, runs, f"{split}_err")
    colors = _depth_colors([k[1] for k in (*train, *evals)] or [0])
    highest = max(
        (
            float(pd.Series(m + (0 if pd.isna(sd).all() else pd.Series(sd).fillna(0))).max())
            for _, m, sd in (*train.values(), *evals.values())
            if len(m)
        ),
        default=0.0,
    )
    top = fig6_top(highest)
    last = max(
        (float(x.max()) for x, _, _ in (*train.values(), *evals.values()) if len(x)), default=0
    )
    per, xlabel = iteration_axis(last)
    fig = Figure(figsize=(FIGSIZE[0], FIGSIZE[1] + 0.5))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, variant in zip(axes, ("plain", "resnet"), strict=True):
        keys = sorted({k for k in (*train, *evals) if k[0] == variant}, key=lambda k: k[1])
        for key in keys:
            c, label = colors[int(key[1])], _label(*key)
            for curves, lw, ls, suffix in ((train, 0.9, "--", None), (evals, 2.2, "-", label)):
                if key not in curves:
                    continue
                x, m, sd = curves[key]
                ax.plot(x / per, m, color=c, lw=lw, ls=ls, label=suffix)
                if len(x) and not pd.isna(sd).all():
                    ax.fill_between(x / per, m - sd, m + sd, color=c, alpha=0.15, lw=0)
        ax.set_title(PANEL_TITLES[variant])
        ax.set_xlabel(xlabel)
        ax.set_ylim(0, top)
        ax.grid(alpha=0.3)
        if keys:
            ax.legend(loc="upper right", fontsize=8, title=None)
        else:
            unfinished = runs[(runs["variant"] == variant) & (runs["status"] != "completed")]
            why = f"no finished {PANEL_TITLES[variant]}" + (
                f" ({len(unfinished)} unfinished)" if len(unfinished) else ""
            )
            ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="gray")
    axes[0].set_ylabel("error (%)")
    fig.suptitle(
        f"{dataset_title(runs)}: training error (dashed) and {split_word(split)} error (bold); "
        f"mean over seeds, band = ±1 std\n{rec.short()}",
        fontsize=10,
    )
    caption = (
        "the paper's axis (0-20%)"
        if top == PAPER_FIG6_TOP
        else (
            f"axis widened to 0-{top:.0f}%: these curves reach {highest:.0f}%, above the "
            f"paper's 0-20%"
        )
    )
    fig.text(
        0.5,
        0.01,
        f"Finished runs only; {caption}.",
        ha="center",
        va="bottom",
        fontsize=8,
        color="dimgray",
    )
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    return fig


# --- Figure 7 and gradient norms --------------------------------------------------------------
def _final_profiles(stats: pd.DataFrame, value: str) -> tuple[dict, set]:
    """({(variant, depth): per-layer mean over seeds}, the iterations the weights are from), with
    the final weights of completed runs."""
    if stats.empty:
        return {}, set()
    last = stats[(stats["status"] == "completed") & (stats["iter"] == stats["iterations_total"])]
    out = {}
    for key, g in last.groupby(["variant", "depth"]):
        out[key] = g.groupby("layer")[value].mean().sort_index()
    return out, set(int(i) for i in last["iter"])


def _weights_at(iters: set) -> str:
    if len(iters) == 1:
        return f"final weights, iteration {next(iter(iters)):,}"
    return "final weights of each run" if iters else "no finished runs"


# plain and residual told apart by marker (open circles vs filled triangles) as well as by dashes
VARIANT_STYLE = {
    "plain": {"ls": "--", "marker": "o", "mfc": "white"},
    "resnet": {"ls": "-", "marker": "^"},
}


def figure7(stats: pd.DataFrame, out: Path) -> list[Path]:
    return _save(build_figure7(stats), out / "fig7")


def build_figure7(stats: pd.DataFrame) -> Figure:
    """The paper's Fig. 7: std of each 3x3 layer's response, in layer order (top) and sorted
    (bottom), for every finished depth."""
    prof, iters = _final_profiles(stats, "std")
    colors = _depth_colors([k[1] for k in prof] or [0])
    fig = Figure(figsize=(FIGSIZE[0], 7.0))
    top, bottom = fig.subplots(2, 1)
    for key in sorted(prof, key=lambda k: (k[0], k[1])):
        p, c = prof[key], colors[int(key[1])]
        style = {
            **VARIANT_STYLE.get(key[0], {}),
            "color": c,
            "lw": 1.3,
            "ms": 4,
            "label": _label(*key),
        }
        top.plot(p.index, p.to_numpy(), **style)
        bottom.plot(range(1, len(p) + 1), sorted(p.to_numpy(), reverse=True), **style)
    top.set_xlabel("layer index (original)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    for ax in (top, bottom):
        ax.set_ylabel("std")
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if prof:
            ax.legend(fontsize=8, ncol=2)
        else:
            ax.text(
                0.5,
                0.5,
                "no finished runs recorded layer statistics",
                ha="center",
                va="center",
                transform=ax.transAxes,
                color="gray",
            )
    top.set_title(
        f"Std of layer responses (3x3 layers, after BN, before addition and ReLU), "
        f"{_weights_at(iters)}; plain: open circles, dashed",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


GRAD_CAPTION = (
    "A 3x3 conv followed by BN is scale-invariant: its effective step is ‖g‖/‖W‖, so raw gradient "
    "norms mislead where the weights have grown. Finished runs only."
)


def figure_grad_norms(norms: pd.DataFrame, out: Path) -> list[Path]:
    return _save(build_figure_grad_norms(norms), out / "grad_norms")


def build_figure_grad_norms(norms: pd.DataFrame, max_panels: int = 4) -> Figure:
    """Per-layer gradient norms of the 3x3 convs at the recorded early iterations, plain vs
    residual, of finished runs: relative to the weight's norm (top, the effective step) and raw
    (bottom)."""
    norms = norms[norms["status"] == "completed"] if "status" in norms else norms
    relative = "weight_norm" in norms and norms["weight_norm"].notna().any()
    iters = sorted(norms["iter"].unique())[:max_panels] or [0]
    colors = _depth_colors(norms["depth"].dropna() if len(norms) else [0])
    rows = [("relative", "‖g‖ / ‖W‖ of each 3x3 conv")] if relative else []
    rows.append(("grad_norm", "‖∂loss/∂W‖ of each 3x3 conv"))
    fig = Figure(figsize=(3.6 * len(iters) + 1, 3.6 * len(rows) + 0.8))
    axes = fig.subplots(len(rows), len(iters), squeeze=False, sharey="row")
    for r, (value, ylabel) in enumerate(rows):
        for ax, i in zip(axes[r], iters, strict=True):
            g = norms[norms["iter"] == i]
            for (variant, depth), gg in sorted(
                g.groupby(["variant", "depth"]), key=lambda kv: kv[0]
            ):
                v = gg["grad_norm"] / gg["weight_norm"] if value == "relative" else gg["grad_norm"]
                p = v.groupby(gg["layer"]).mean().sort_index()
                ax.plot(
                    p.index,
                    p.to_numpy(),
                    **{**VARIANT_STYLE.get(variant, {}), "ms": 3},
                    color=colors[int(depth)],
                    lw=1.2,
                    label=_label(variant, depth),
                )
            ax.set_yscale("log")
            ax.set_title(f"iteration {i}: weights before its update", fontsize=9)
            ax.set_xlabel("layer index (input → output)")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3, which="both")
            if g.empty:
                ax.text(
                    0.5,
                    0.5,
                    "no finished runs",
                    ha="center",
                    va="center",
                    transform=ax.transAxes,
                    color="gray",
                )
        axes[r][0].set_ylabel(ylabel)
        if len(norms):
            axes[r][-1].legend(fontsize=7)
    note = (
        ""
        if relative
        else " These runs recorded no weight norms (an older record): raw norms only."
    )
    fig.suptitle(
        "Gradient norms per layer early in training (plain: open circles, dashed)", fontsize=10
    )
    fig.text(
        0.5,
        0.01,
        GRAD_CAPTION + note,
        ha="center",
        va="bottom",
        fontsize=8,
        color="dimgray",
        wrap=True,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return fig


def _save(fig: Figure, stem: Path) -> list[Path]:
    """Write a figure as PNG and PDF. Figures are made without pyplot: files only, and a
    notebook's plotting backend is left alone."""
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=DPI)
    fig.savefig(paths[1])
    return paths


# --- the verdict ----------------------------------------------------------------------------
# Each of the paper's claims is reproduced, not reproduced, inconclusive (a difference within two
# standard errors of the seeds), too short to judge (not the paper's schedule, or a net it needs
# has not finished) or not assessed (fewer nets ran than the claim compares).
REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE, TOO_SHORT, NOT_ASSESSED = (
    "reproduced",
    "not reproduced",
    "inconclusive",
    "too short to judge",
    "not assessed",
)


def _delta(hi, lo, col: str) -> tuple[float, float | None]:
    """Difference of two nets' mean ``col`` (``hi`` minus ``lo``) and its standard error."""
    d = getattr(hi, f"{col}_mean") - getattr(lo, f"{col}_mean")
    if hi.seeds < 2 or lo.seeds < 2:
        return d, None
    return d, math.sqrt(
        getattr(hi, f"{col}_std") ** 2 / hi.seeds + getattr(lo, f"{col}_std") ** 2 / lo.seeds
    )


def _judge(d: float, se: float | None, want_positive: bool) -> str:
    """``yes`` (the expected direction, beyond 2 standard errors when there are several seeds),
    ``noise`` (within 2 standard errors) or ``no``."""
    if se is not None and abs(d) <= 2 * se:
        return "noise"
    return "yes" if (d > 0) == want_positive else "no"


def _pm_delta(d: float, se: float | None) -> str:
    return f"Δ {d:+.2f}" + (f" ± {se:.2f} s.e." if se is not None else "")


def _outcome(judged: list[str]) -> str:
    if "no" in judged:
        return NOT_REPRODUCED
    return REPRODUCED if all(j == "yes" for j in judged) else INCONCLUSIVE


@dataclass
class Claim:
    text: str
    outcome: str
    evidence: str

    def line(self, n: int) -> str:
        return f"({n}) {self.text}: {self.outcome}. {self.evidence}"


def _pairs(
    variant: str, depths: list[int], col: str, by: dict, deeper_higher: bool, word: str
) -> tuple[list[str], str]:
    """Judge every adjacent pair of depths on ``col``; (judgements, the evidence)."""
    judged, parts = [], []
    for lo, hi in zip(depths, depths[1:], strict=False):
        a, b = by[(variant, lo)], by[(variant, hi)]
        d, se = _delta(b, a, col)
        j = _judge(d, se, want_positive=deeper_higher)
        judged.append(j)
        mark = {"yes": "", "noise": " (within the noise)", "no": " (the other way)"}[j]
        parts.append(
            f"{_label(variant, lo)} {getattr(a, col + '_mean'):.2f}% → {_label(variant, hi)} "
            f"{getattr(b, col + '_mean'):.2f}% ({_pm_delta(d, se)}){mark}"
        )
    return judged, f"{word}: " + "; ".join(parts) + "."


def claims(t: pd.DataFrame, rec: Recipe) -> list[Claim]:
    """The paper's three claims about depth, judged on Table 6's finished runs."""
    word = split_word(t["split"].iloc[0])
    by = {(r.variant, r.depth): r for r in t.itertuples() if r.seeds}
    waiting = {(r.variant, r.depth) for r in t.itertuples() if not r.seeds and r.unfinished}
    plain = sorted(d for v, d in by if v == "plain")
    res = sorted(d for v, d in by if v == "resnet")
    out = []

    def settle(judged: list[str] | None, needs: set) -> str:
        if judged is None:
            return NOT_ASSESSED
        if not rec.paper_schedule or needs & waiting:
            return TOO_SHORT
        return _outcome(judged)

    # (1) degradation: deeper plain nets train worse, at every step in depth
    text = "Deeper plain nets have higher training error (every adjacent pair of depths)"
    if len(plain) >= 2:
        judged, ev = _pairs("plain", plain, "train_error", by, True, "training error")
        out.append(Claim(text, settle(judged, {k for k in waiting if k[0] == "plain"}), ev))
    else:
        out.append(Claim(text, settle(None, set()), "Fewer than two plain depths finished."))
    # (2) at every depth the ResNet trains and generalises better than the plain net
    text = f"At every depth the ResNet's training and {word} error are below the plain net's"
    both = sorted(set(plain) & set(res))
    if both:
        judged, parts = [], []
        for d in both:
            p, r = by[("plain", d)], by[("resnet", d)]
            for col, what in (("train_error", "training"), ("error", word)):
                delta, se = _delta(r, p, col)
                judged.append(_judge(delta, se, want_positive=False))
                parts.append(
                    f"depth {d} {what}: ResNet {getattr(r, col + '_mean'):.2f}% vs plain "
                    f"{getattr(p, col + '_mean'):.2f}% ({_pm_delta(delta, se)})"
                )
        needs = {(v, d) for v, d in waiting}
        out.append(Claim(text, settle(judged, needs), "; ".join(parts) + "."))
    else:
        out.append(
            Claim(text, settle(None, set()), "No depth finished as both a plain net and a ResNet.")
        )
    # (3) deeper ResNets generalise better
    text = f"Deeper ResNets have lower {word} error (every adjacent pair of depths)"
    if len(res) >= 2:
        judged, ev = _pairs("resnet", res, "error", by, False, f"{word} error")
        out.append(Claim(text, settle(judged, {k for k in waiting if k[0] == "resnet"}), ev))
    else:
        out.append(Claim(text, settle(None, set()), "Fewer than two ResNet depths finished."))
    return out


def verdict(runs: pd.DataFrame) -> str:
    """Plain-text verdict on the paper's claims about depth, with the numbers behind each.

    Plain nets are judged on training error (degradation is a training-error effect), the plain
    vs residual comparison on both errors, ResNets on eval error. With several seeds a difference
    within two standard errors is inconclusive; with one seed there is no noise estimate. Runs not
    on the paper's schedule, or nets still unfinished, are too short to judge: their numbers are
    shown as measured, without a verdict.
    """
    t = table6(runs)
    rec = recipe(runs)
    if t.empty or not t["seeds"].any():
        return f"No finished runs: no verdict.\n{rec.headline()}\n"
    cs = claims(t, rec)
    outcomes = [c.outcome for c in cs]
    judged = [o for o in outcomes if o != NOT_ASSESSED]
    if not judged:
        head = "no verdict: too few nets finished to compare any depths."
    elif not rec.paper_schedule:
        head = (
            "too short to judge: these runs are not on the paper's schedule (the numbers below are "
            "as measured)."
        )
    elif NOT_REPRODUCED in judged:
        head = "the degradation problem is NOT reproduced: see the claims below."
    elif TOO_SHORT in judged:
        head = "too short to judge: nets it compares have not finished."
    elif INCONCLUSIVE in judged:
        head = "inconclusive: a difference is within the noise of the seeds; run more seeds."
    else:
        head = "the degradation problem is reproduced" + (
            "." if len(judged) == 3 else f" on the claims it could assess ({len(judged)} of 3)."
        )
    lines = [f"Verdict: {head}", rec.headline()]
    lines += [c.line(i) for i, c in enumerate(cs, start=1)]
    seeds = sorted(set(t.loc[t["seeds"] > 0, "seeds"]))
    its = runs.loc[runs["status"] == "completed", "iterations_total"].dropna().unique()
    word = split_word(t["split"].iloc[0])
    finished = int(t["seeds"].sum())
    lines.append(
        f"Based on {finished} finished runs ({'/'.join(map(str, seeds))} seed(s) per net)"
        + (f", {int(its[0]):,} iterations each" if len(its) == 1 else "")
        + f"; errors are final {word} errors, training errors over the last logged window"
        + (
            "; one seed per net, so there is no noise estimate."
            if max(seeds) < 2
            else "; a difference within 2 standard errors is called within the noise."
        )
    )
    return "\n".join(lines) + "\n"


# --- every run, with what it ran on -----------------------------------------------------------
def _duration(seconds) -> str:
    s = pd.to_numeric(seconds, errors="coerce")
    if pd.isna(s):
        return "—"
    return f"{s / 3600:.1f} h" if s >= 3600 else f"{s / 60:.0f} min"


def _setting(r: pd.Series) -> str:
    """The fast path a run had, in words: precision, compile, channels_last."""
    parts = [r["precision"] if isinstance(r["precision"], str) else "—"]
    if isinstance(r["compile"], str) and r["compile"] != "off":
        parts.append(f"compile ({r['compile']})")
    if r["channels_last"] is True:
        parts.append("channels_last")
    return ", ".join(parts)


def runs_markdown(runs: pd.DataFrame) -> str:
    """``runs.md``: every ended run, one row each: its net and seed, schedule, precision and fast
    path, device, wall time, final training and evaluation errors, and the paper's test error."""
    done = runs[runs["status"].isin(["completed", "diverged"])]
    if done.empty:
        return "No ended runs.\n"
    split = eval_split(runs)
    lines = [
        f"| net | seed | iterations (lr /10 at) | precision, fast path | device | wall time "
        f"| status | training error (%) | {split_word(split)} error (%) | paper: test error (%) |",
        "| --- | ---: | --- | --- | --- | ---: | --- | ---: | ---: | ---: |",
    ]
    done = done.assign(_order=done["variant"].map({"plain": 0, "resnet": 1}).fillna(2))
    for _, r in done.sort_values(["_order", "depth", "seed"]).iterrows():
        paper = (
            PAPER_TABLE6.get(int(r["depth"]))
            if r["variant"] == "resnet" and pd.notna(r["depth"])
            else None
        )
        its = f"{int(r['iterations_total']):,}" if pd.notna(r["iterations_total"]) else "—"
        milestones = r.get("schedule.milestones")
        if isinstance(milestones, (list, tuple)) and milestones:
            its += f" ({', '.join(f'{int(m):,}' for m in milestones)})"
        name = r["device_name"] if isinstance(r["device_name"], str) else "?"
        device = f"CPU ({name})" if r["device"] == "cpu" else name
        train, err = (
            pd.to_numeric(r[k], errors="coerce") for k in ("final_train_err", f"final_{split}_err")
        )
        lines.append(
            f"| {_label(r['variant'], r['depth'])} | {r['seed']} | {its} | {_setting(r)} "
            f"| {device} | {_duration(r['wall_time_s'])} | {r['status']} | {_pm(train, math.nan)} "
            f"| {_pm(err, math.nan)} | {f'{paper[1]:.2f}' if paper else '—'} |"
        )
    return "\n".join(lines) + "\n"


# --- the report folder ----------------------------------------------------------------------
def write_report(paths, out: str | Path | None = None) -> dict[str, Path]:
    """Collect ``paths`` (sweeps or run folders) and write the report; return the files by role."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    res: Results = collect(paths)
    if res.runs.empty:
        raise ResnetReproError(
            f"No runs found under {', '.join(map(str, paths))}: give a sweep directory "
            f"(runs/<experiment>/<time>) or a folder of run directories."
        )
    runs, history = res
    check_poolable(runs)
    out = Path(out) if out else Path(paths[0]) / "report"
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    t = table6(runs)
    rec = recipe(runs)
    its = runs["iterations_total"].dropna().unique()
    schedule = f"{int(its[0]):,} iterations per run" if len(its) == 1 else ""
    md = table6_markdown(t, schedule, rec)
    (out / "table6.md").write_text(md)
    t.to_csv(out / "table6.csv", index=False)
    runs.to_csv(out / "runs.csv", index=False)
    files.update(
        table6_md=out / "table6.md", table6_csv=out / "table6.csv", runs_csv=out / "runs.csv"
    )
    (out / "runs.md").write_text(runs_markdown(runs))
    files["runs_md"] = out / "runs.md"
    files["fig6_png"], files["fig6_pdf"] = figure6(history, runs, out, rec)
    stats = collect_layer_stats(paths)
    if not stats.empty:
        files["fig7_png"], files["fig7_pdf"] = figure7(stats, out)
    norms = collect_grad_norms(paths)
    if not norms.empty:
        files["grad_norms_png"], files["grad_norms_pdf"] = figure_grad_norms(norms, out)
    text = verdict(runs)
    (out / "verdict.txt").write_text(text)
    files["verdict"] = out / "verdict.txt"
    for p in paths:
        if (Path(p) / MANIFEST_FILE).is_file() and len(paths) == 1:
            # under another name, so collecting a folder that holds reports never mistakes it
            # for a sweep
            shutil.copyfile(Path(p) / MANIFEST_FILE, out / "sweep_manifest.csv")
            files["manifest"] = out / "sweep_manifest.csv"
    (out / "report.md").write_text(report_markdown(paths, runs, rec, text, md, files))
    files["report"] = out / "report.md"
    return files


def report_markdown(
    paths: list,
    runs: pd.DataFrame,
    rec: Recipe,
    verdict_text: str,
    table_md: str,
    files: dict[str, Path],
) -> str:
    """``report.md``: the recipe line, the run counts, the verdict, Table 6 and the figures
    written."""
    status = runs["status"].value_counts().to_dict()
    index = [
        f"# {dataset_title(runs)} degradation study: {', '.join(Path(p).name for p in paths)}\n",
        f"**{rec.headline()}**"
        + (
            ""
            if rec.paper_schedule
            else " The paper's numbers below are a reference these runs cannot be compared with."
        )
        + "\n",
        "Runs: " + ", ".join(f"{n} {s}" for s, n in sorted(status.items())) + ".\n",
        "## Verdict\n",
        verdict_text,
        "## Table 6\n",
        table_md,
        "## Every run\n",
        runs_markdown(runs),
        "## Figure 6\n",
        "![Figure 6](fig6.png)\n",
    ]
    if "fig7_png" in files:
        index += ["## Figure 7\n", "![Figure 7](fig7.png)\n"]
    if "grad_norms_png" in files:
        index += ["## Gradient norms early in training\n", "![Gradient norms](grad_norms.png)\n"]
    return "\n".join(index)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="resnet-report", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "paths", nargs="+", help="sweep directories (runs/<experiment>/<time>) or run folders"
    )
    ap.add_argument("-o", "--out", help="report folder (default: <first path>/report)")
    ap.add_argument(
        "--wandb-report", metavar="ENTITY/PROJECT", help="also build and save a W&B Report"
    )
    ap.add_argument(
        "--group", help="the sweep's W&B group (default: <experiment>-<sweep folder name>)"
    )
    ap.add_argument("--title", help="title of the W&B Report")
    args = ap.parse_args(argv)
    try:
        for p in args.paths:
            if not Path(p).exists():
                raise ResnetReproError(
                    f"{p} does not exist. Give a sweep directory, e.g. runs/degradation/<time>."
                )
        if args.wandb_report and "/" not in args.wandb_report:
            raise ResnetReproError(
                f"--wandb-report {args.wandb_report!r} is not ENTITY/PROJECT, e.g. "
                f"my-team/resnet_repro."
            )
        try:
            files = write_report(args.paths, args.out)
        except OSError as ex:
            where = ex.filename or args.out or f"{args.paths[0]}/report"
            raise ResnetReproError(
                f"Cannot write the report to {where} ({ex.strerror or ex}). "
                f"Choose a writable folder with -o <folder>."
            ) from None
        print(Path(files["verdict"]).read_text(), end="")
        print(f"resnet-report: wrote {len(files)} files to {files['report'].parent}")
        if args.wandb_report:
            print(f"resnet-report: W&B Report saved at {save_wandb_report(args, files)}")
    except ResnetReproError as ex:
        print(f"resnet-report: error: {ex}", file=sys.stderr)
        sys.exit(2)


def save_wandb_report(args, files: dict[str, Path]) -> str:
    from .results import collect
    from .wandb_report import build_wandb_report

    entity, project = args.wandb_report.split("/", 1)
    runs = collect(args.paths).runs
    group = args.group
    if group is None:
        exp = runs["experiment_name"].dropna().unique() if "experiment_name" in runs else []
        sweeps = runs["sweep"].dropna().unique()
        if len(exp) != 1 or len(sweeps) != 1:
            raise ResnetReproError(
                "Cannot tell the sweep's W&B group: give --group <experiment>-<sweep folder name>."
            )
        group = f"{exp[0]}-{sweeps[0]}"
    report = build_wandb_report(
        entity,
        project,
        group,
        title=args.title,
        table_markdown=files["table6_md"].read_text(),
        verdict=files["verdict"].read_text(),
        eval_metric=f"{eval_split(runs)}_err",
    )
    try:
        report.save()
    except Exception as ex:  # noqa: BLE001 - the local report is already complete
        raise ResnetReproError(
            f"Could not save the W&B Report to {entity}/{project} ({type(ex).__name__}: {ex}). The "
            f"local report in {files['report'].parent} is complete; check `wandb login` and the "
            f"network, then rerun."
        ) from None
    try:
        return report.url
    except Exception:  # noqa: BLE001 - saved; only the link could not be formed
        return f"{entity}/{project}, report id {report.id}"


if __name__ == "__main__":
    main()
