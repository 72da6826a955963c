"""From sweep to paper: Table 6, Figures 6 and 7, gradient-norm profiles and a degradation verdict.

    resnet-report runs/degradation/2026-11-23_10-00-00-000000          # writes <sweep>/report/
    resnet-report runs/degradation/<sweep> -o analysis/results/mine     # somewhere else
    resnet-report runs/degradation/<sweep> --wandb-report me/resnet_repro --group degradation-<sweep>

The report folder holds ``table6.md``/``.csv``, ``fig6.png``/``.pdf``, ``fig7.png``/``.pdf``,
``grad_norms.png``/``.pdf`` (when the runs recorded them), ``verdict.txt``, ``runs.csv``, a copy of
the sweep's manifest (``sweep_manifest.csv``) and ``report.md``, which shows them all.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
from pathlib import Path

import matplotlib
import pandas as pd
from matplotlib.figure import Figure

from .errors import ResnetReproError
from .record import RUNTIME_KEYS
from .results import Results, collect, collect_grad_norms, collect_layer_stats
from .sweep import MANIFEST_FILE

# He et al. 2016, Table 6 (CIFAR-10 test error %, params in millions). ResNet-110: best of 5 runs,
# with mean ± std in brackets.
PAPER_TABLE6 = {20: (0.27, 8.75), 32: (0.46, 7.51), 44: (0.66, 7.17), 56: (0.85, 6.97),
                110: (1.7, 6.43), 1202: (19.4, 7.93)}
PAPER_NOTES = {110: "6.61 ± 0.16 mean of 5 runs (6.43 best)"}
FIG7_DEPTHS = (20, 56, 110)  # the nets of the paper's Fig. 7
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
    return ", ".join({"cifar10": "CIFAR-10"}.get(n, n) for n in names) or "runs"


def split_word(split: str) -> str:
    return "test" if split == "test" else "validation"


def _label(variant: str, depth) -> str:
    return f"{VARIANTS.get(variant, variant)}-{int(depth)}"


def _mean_std(s: pd.Series) -> tuple[float, float]:
    s = pd.to_numeric(s, errors="coerce").dropna()
    return (s.mean() if len(s) else math.nan), (s.std(ddof=1) if len(s) > 1 else math.nan)


# Config keys that may differ between the runs of one report: the net's depth and kind, the seed,
# names, the depth-dependent warm-up, and where/how runs ran (not what they computed).
POOLED_KEYS = {"model.depth", "model.n", "model.residual", "seed", "name", "experiment_name",
               "schedule.warmup"} | RUNTIME_KEYS


def check_poolable(runs: pd.DataFrame) -> None:
    """Refuse to pool finished runs of different recipes, or the same net and seed twice."""
    done = runs[runs["status"] == "completed"]
    recipe = [c for c in done.columns if "." in c and c not in POOLED_KEYS]
    differ = {c: sorted(map(str, done[c].dropna().unique())) for c in recipe
              if done[c].astype(str).nunique() > 1}
    if differ:
        shown = "; ".join(f"{k}: {', '.join(v[:4])}" for k, v in list(differ.items())[:4])
        raise ResnetReproError(
            f"These runs do not share one recipe ({shown}), but Table 6 and the figures pool runs by net "
            f"and depth. Report each sweep on its own, or collect only runs that share a recipe."
        )
    dup = done[done.duplicated(["variant", "depth", "seed"], keep=False)]
    if len(dup):
        r = dup.iloc[0]
        runs_ = ", ".join(dup[(dup["variant"] == r["variant"]) & (dup["depth"] == r["depth"])
                              & (dup["seed"] == r["seed"])]["run"])
        raise ResnetReproError(
            f"{_label(r['variant'], r['depth'])} seed {r['seed']} finished more than once ({runs_}): "
            f"a mean over seeds would count it twice. Report the sweeps separately, or remove one of them."
        )


# --- Table 6 --------------------------------------------------------------------------------
def table6(runs: pd.DataFrame) -> pd.DataFrame:
    """Final error by variant and depth over the completed runs: mean, std (n-1) and n seeds."""
    split = eval_split(runs)
    rows = []
    for (variant, depth), g in runs.dropna(subset=["variant", "depth"]).groupby(["variant", "depth"]):
        done = g[g["status"] == "completed"]
        errs = pd.to_numeric(done[f"final_{split}_err"], errors="coerce").dropna()
        err_m, err_s = _mean_std(errs)
        tr_m, tr_s = _mean_std(done["final_train_err"])
        paper = PAPER_TABLE6.get(int(depth)) if variant == "resnet" else None
        params = pd.to_numeric(g["params"], errors="coerce").dropna()
        rows.append({
            "net": _label(variant, depth), "variant": variant, "depth": int(depth),
            "params": int(params.iloc[0]) if len(params) else None, "seeds": len(errs),
            "unfinished": len(g) - len(done), "split": split,
            "error_mean": err_m, "error_std": err_s, "train_error_mean": tr_m, "train_error_std": tr_s,
            "paper_test_error": paper[1] if paper else None, "paper_params_m": paper[0] if paper else None,
            "paper_note": PAPER_NOTES.get(int(depth), "") if paper else "",
            "protocol": ",".join(sorted(set(map(str, done["protocol"].dropna())))) or None,
        })
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


def table6_markdown(t: pd.DataFrame, schedule: str = "") -> str:
    if t.empty:
        return "No finished runs to tabulate.\n"
    split = t["split"].iloc[0]
    head = (f"| net | params | seeds | ours: {split_word(split)} error (%) | ours: training error (%) "
            f"| paper: test error (%) |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
    lines = []
    for r in t.itertuples():
        params = f"{r.params / 1e6:.2f}M" if pd.notna(r.params) and r.params else "—"
        paper = "—" if r.paper_test_error is None or pd.isna(r.paper_test_error) else f"{r.paper_test_error:.2f}"
        if r.paper_note:
            paper += f" ({r.paper_note})"
        seeds = f"{r.seeds}" + (f" (+{r.unfinished} unfinished)" if r.unfinished else "")
        lines.append(f"| {r.net} | {params} | {seeds} | {_pm(r.error_mean, r.error_std)} "
                     f"| {_pm(r.train_error_mean, r.train_error_std)} | {paper} |")
    note = (f"\nOur column is the final {split_word(split)} error (mean ± std over seeds, std with n-1)"
            + (f"; {schedule}" if schedule else "") + ". The paper's column is its CIFAR-10 test error; "
            "it lists no plain nets in Table 6 (they appear in its Fig. 6).\n")
    if split == "test" and "paper" in set(t.get("protocol", pd.Series(dtype=str)).dropna()):
        note += ("Our nets trained on 45k images (the paper protocol holds 5k out for validation); the paper's "
                 "final models most likely trained on all 50k (dataset.protocol=full).\n")
    if split == "val":
        note += ("Validation error (on images held out of the training set: 5k of CIFAR-10's 50k under the "
                 "paper protocol) is not the paper's test error (the 10k test batch): compare trends and "
                 "gaps, not the last decimal.\n")
    return head + "\n".join(lines) + "\n" + note


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
        out[key] = (wide.index.to_numpy(), wide.mean(axis=1).to_numpy(), wide.std(axis=1, ddof=1).to_numpy())
    return out


def _depth_colors(depths) -> dict:
    cmap = matplotlib.colormaps["tab10"]
    return {d: cmap(i % 10) for i, d in enumerate(sorted(set(int(d) for d in depths)))}


def figure6(history: pd.DataFrame, runs: pd.DataFrame, out: Path) -> list[Path]:
    """The paper's Fig. 6: training error thin dashed, eval error bold; plain and residual panels."""
    split = eval_split(runs)
    train, evals = _curves(history, runs, "train_err"), _curves(history, runs, f"{split}_err")
    colors = _depth_colors([k[1] for k in (*train, *evals)] or [0])
    fig = Figure(figsize=FIGSIZE)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, variant in zip(axes, ("plain", "resnet"), strict=True):
        keys = sorted({k for k in (*train, *evals) if k[0] == variant}, key=lambda k: k[1])
        for key in keys:
            c, label = colors[int(key[1])], _label(*key)
            for curves, lw, ls, suffix in ((train, 0.9, "--", None), (evals, 2.2, "-", label)):
                if key not in curves:
                    continue
                x, m, s = curves[key]
                ax.plot(x / 1e4, m, color=c, lw=lw, ls=ls, label=suffix)
                if len(x) and not pd.isna(s).all():
                    ax.fill_between(x / 1e4, m - s, m + s, color=c, alpha=0.15, lw=0)
        ax.set_title(PANEL_TITLES[variant])
        ax.set_xlabel("iter. (1e4)")
        ax.set_ylim(0, 20)
        ax.grid(alpha=0.3)
        if keys:
            ax.legend(loc="upper right", fontsize=8, title=None)
        else:
            ax.text(0.5, 0.5, "no runs", ha="center", va="center", transform=ax.transAxes, color="gray")
    axes[0].set_ylabel("error (%)")
    fig.suptitle(f"{dataset_title(runs)}: training error (dashed) and {split_word(split)} error (bold); "
                 f"mean over seeds, band = ±1 std", fontsize=10)
    fig.tight_layout()
    return _save(fig, out / "fig6")


# --- Figure 7 and gradient norms --------------------------------------------------------------
def _final_profiles(stats: pd.DataFrame, value: str) -> dict:
    """{(variant, depth): per-layer mean over seeds} with the final weights of completed runs."""
    if stats.empty:
        return {}
    last = stats[(stats["status"] == "completed") & (stats["iter"] == stats["iterations_total"])]
    out = {}
    for key, g in last.groupby(["variant", "depth"]):
        out[key] = g.groupby("layer")[value].mean().sort_index()
    return out


def figure7(stats: pd.DataFrame, out: Path, depths=FIG7_DEPTHS) -> list[Path]:
    """The paper's Fig. 7: std of each 3x3 layer's response, in layer order (top) and sorted (bottom)."""
    prof = _final_profiles(stats, "std")
    if any(k[1] in depths for k in prof):
        prof = {k: v for k, v in prof.items() if k[1] in depths}
    colors = _depth_colors([k[1] for k in prof] or [0])
    fig = Figure(figsize=(FIGSIZE[0], 7.0))
    top, bottom = fig.subplots(2, 1)
    for key in sorted(prof, key=lambda k: (k[0], k[1])):
        p, c = prof[key], colors[int(key[1])]
        ls = "--" if key[0] == "plain" else "-"
        top.plot(p.index, p.to_numpy(), ls=ls, color=c, lw=1.4, marker=".", ms=3, label=_label(*key))
        bottom.plot(range(1, len(p) + 1), sorted(p.to_numpy(), reverse=True), ls=ls, color=c, lw=1.4, marker=".", ms=3)
    top.set_xlabel("layer index (original)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    for ax in (top, bottom):
        ax.set_ylabel("std")
        ax.grid(alpha=0.3)
    if prof:
        top.legend(fontsize=8, ncol=2)
    top.set_title("Std of layer responses (3x3 layers, after BN, before addition and ReLU); plain dashed")
    fig.tight_layout()
    return _save(fig, out / "fig7")


def figure_grad_norms(norms: pd.DataFrame, out: Path, max_panels: int = 4) -> list[Path]:
    """Per-layer gradient norms of the 3x3 convs at the recorded early iterations, plain vs residual."""
    iters = sorted(norms["iter"].unique())[:max_panels]
    colors = _depth_colors(norms["depth"])
    fig = Figure(figsize=(3.6 * len(iters) + 1, 4.0))
    axes = fig.subplots(1, len(iters), squeeze=False, sharey=True)
    for ax, i in zip(axes[0], iters, strict=True):
        g = norms[norms["iter"] == i]
        for (variant, depth), gg in sorted(g.groupby(["variant", "depth"]), key=lambda kv: kv[0]):
            p = gg.groupby("layer")["grad_norm"].mean().sort_index()
            ax.plot(p.index, p.to_numpy(), ls="--" if variant == "plain" else "-",
                    color=colors[int(depth)], lw=1.3, label=_label(variant, depth))
        ax.set_yscale("log")
        ax.set_title(f"iteration {i}")
        ax.set_xlabel("layer index (input → output)")
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("‖∂loss/∂W‖ of each 3x3 conv")
    axes[0][-1].legend(fontsize=7)
    fig.suptitle("Gradient norms per layer early in training (plain dashed, residual solid)", fontsize=10)
    fig.tight_layout()
    return _save(fig, out / "grad_norms")


def _save(fig: Figure, stem: Path) -> list[Path]:
    """Write a figure as PNG and PDF. Figures are made without pyplot: files only, and a
    notebook's plotting backend is left alone."""
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    fig.savefig(paths[0], dpi=DPI)
    fig.savefig(paths[1])
    return paths


# --- the verdict ----------------------------------------------------------------------------
def _delta(hi, lo, col: str) -> tuple[float, float | None]:
    """Difference of two nets' mean ``col`` (deeper minus shallower) and its standard error."""
    d = getattr(hi, f"{col}_mean") - getattr(lo, f"{col}_mean")
    if hi.seeds < 2 or lo.seeds < 2:
        return d, None
    return d, math.sqrt(getattr(hi, f"{col}_std") ** 2 / hi.seeds + getattr(lo, f"{col}_std") ** 2 / lo.seeds)


def _judge(d: float, se: float | None, want_positive: bool) -> str:
    """``yes`` (the expected direction, beyond 2 standard errors when there are several seeds),
    ``noise`` (within 2 standard errors) or ``no``."""
    if se is not None and abs(d) <= 2 * se:
        return "noise"
    return "yes" if (d > 0) == want_positive else "no"


def _pm_delta(d: float, se: float | None) -> str:
    return f"Δ {d:+.2f}" + (f" ± {se:.2f} s.e." if se is not None else "")


# How each half of the verdict reads: plain nets on training error (deeper should be worse),
# ResNets on eval error (deeper should be better).
_HALVES = {
    "plain": ("Plain nets", "train_error", True, ">", "<=",
              {"yes": "the deeper plain net trains worse (degradation).",
               "no": "no degradation in training error."}),
    "resnet": ("Residual nets", "error", False, "<", ">=",
               {"yes": "the deeper residual net is better.", "no": "depth does not help here."}),
}


def _assess(variant: str, lo, hi, word: str) -> tuple[str, str]:
    """Outcome and sentence for one half of the verdict, deepest (``hi``) vs shallowest (``lo``)."""
    title, col, worse_is_deeper, sign_yes, sign_no, texts = _HALVES[variant]
    d, se = _delta(hi, lo, col)
    outcome = _judge(d, se, want_positive=worse_is_deeper)
    what, other = ("training", word) if col == "train_error" else (word, "training")
    other_col = "error" if col == "train_error" else "train_error"
    sign = sign_yes if (d > 0) == worse_is_deeper else sign_no
    text = texts.get(outcome, "the difference is within the noise of the seeds.")
    return outcome, (
        f"{title}: {_label(variant, hi.depth)} {getattr(hi, col + '_mean'):.2f}% {what} error {sign} "
        f"{_label(variant, lo.depth)} {getattr(lo, col + '_mean'):.2f}% ({_pm_delta(d, se)}; {other}: "
        f"{getattr(hi, other_col + '_mean'):.2f}% vs {getattr(lo, other_col + '_mean'):.2f}%): {text}")


def verdict(runs: pd.DataFrame) -> str:
    """Plain-text verdict on the degradation problem, with the numbers behind it.

    Plain nets are judged on training error (degradation is a training-error effect), ResNets on
    eval error, each comparing the deepest and the shallowest finished depth. With several seeds a
    difference within two standard errors is called noise; with one seed there is no noise estimate.
    """
    t = table6(runs)
    if t.empty:
        return "No finished runs: no verdict.\n"
    split = t["split"].iloc[0]
    word = split_word(split)
    by = {(r.variant, r.depth): r for r in t.itertuples() if r.seeds}
    plain = sorted(d for v, d in by if v == "plain")
    res = sorted(d for v, d in by if v == "resnet")
    lines, outcomes = [], []

    def chain(variant, depths, col):
        return " → ".join(f"{d}: {getattr(by[(variant, d)], col):.2f}%" for d in depths)

    if len(plain) >= 2:
        outcome, line = _assess("plain", by[("plain", plain[0])], by[("plain", plain[-1])], word)
        outcomes.append(outcome)
        lines.append(line)
        if len(plain) > 2:
            lines.append(f"Plain nets by depth (training error): {chain('plain', plain, 'train_error_mean')}.")
    else:
        lines.append("Plain nets: fewer than two depths finished; degradation not assessed.")
    if len(res) >= 2:
        both = len(plain) >= 2 and {plain[0], plain[-1]} <= set(res)
        lo, hi = (plain[0], plain[-1]) if both else (res[0], res[-1])
        outcome, line = _assess("resnet", by[("resnet", lo)], by[("resnet", hi)], word)
        outcomes.append(outcome)
        lines.append(line)
        if len(res) > 2:
            lines.append(f"Residual nets by depth ({word} error): {chain('resnet', res, 'error_mean')}.")
    else:
        lines.append("Residual nets: fewer than two depths finished; not assessed.")
    if len(outcomes) == 2:
        head = ("reproduced: deeper plain nets train worse while deeper ResNets do better."
                if outcomes == ["yes", "yes"] else
                "NOT reproduced: see the numbers below." if "no" in outcomes else
                "inconclusive: a difference is within the noise of the seeds; run more seeds.")
        lines.insert(0, "Verdict: the degradation problem is " + head)
    seeds = sorted(set(t["seeds"]))
    its = runs.loc[runs["status"] == "completed", "iterations_total"].dropna().unique()
    lines.append(f"Based on {int(t['seeds'].sum())} finished runs ({'/'.join(map(str, seeds))} seed(s) per net)"
                 + (f", {int(its[0]):,} iterations each" if len(its) == 1 else "")
                 + f"; errors are final {word} errors, training errors over the last logged window"
                 + ("; one seed per net, so there is no noise estimate." if max(seeds) < 2 else "."))
    return "\n".join(lines) + "\n"


# --- the report folder ----------------------------------------------------------------------
def write_report(paths, out: str | Path | None = None, study: str | None = None,
                 study_overrides: list[str] = ()) -> dict[str, Path]:
    """Collect ``paths`` (sweeps or run folders) and write the report; return the files by role.

    ``study`` (e.g. ``degradation``, a ``conf/study`` name) adds ``study.md``: the study's jobs in
    priority order, done (where, wall time, images/s, device) and pending. A job is done where a
    run of its recipe (the study's, with ``study_overrides``) completed.
    """
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    res: Results = collect(paths)
    if res.runs.empty:
        raise ResnetReproError(f"No runs found under {', '.join(map(str, paths))}: give a sweep directory "
                               f"(runs/<experiment>/<time>) or a folder of run directories.")
    runs, history = res
    check_poolable(runs)
    out = Path(out) if out else Path(paths[0]) / "report"
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}
    t = table6(runs)
    its = runs["iterations_total"].dropna().unique()
    schedule = f"{int(its[0]):,} iterations per run" if len(its) == 1 else ""
    md = table6_markdown(t, schedule)
    (out / "table6.md").write_text(md)
    t.to_csv(out / "table6.csv", index=False)
    runs.to_csv(out / "runs.csv", index=False)
    files.update(table6_md=out / "table6.md", table6_csv=out / "table6.csv", runs_csv=out / "runs.csv")
    files["fig6_png"], files["fig6_pdf"] = figure6(history, runs, out)
    stats = collect_layer_stats(paths)
    if not stats.empty:
        files["fig7_png"], files["fig7_pdf"] = figure7(stats, out)
    norms = collect_grad_norms(paths)
    if not norms.empty:
        files["grad_norms_png"], files["grad_norms_pdf"] = figure_grad_norms(norms, out)
    text = verdict(runs)
    (out / "verdict.txt").write_text(text)
    files["verdict"] = out / "verdict.txt"
    progress = None
    if study is not None:
        from .study import load_study, progress_markdown, resolve_jobs, states_from_runs

        s = load_study(study)
        jobs = resolve_jobs(s, list(study_overrides))
        progress = (f"The {s.name} study ({s.source.name}{', ' + ' '.join(study_overrides) if study_overrides else ''}): "
                    f"{len(s.seeds)} seeds x {len(s.jobs)} jobs, in the order they run.\n\n"
                    + progress_markdown(states_from_runs(jobs, runs)))
        (out / "study.md").write_text(progress)
        files["study"] = out / "study.md"
    for p in paths:
        if (Path(p) / MANIFEST_FILE).is_file() and len(paths) == 1:
            # under another name, so collecting a folder that holds reports never mistakes it for a sweep
            shutil.copyfile(Path(p) / MANIFEST_FILE, out / "sweep_manifest.csv")
            files["manifest"] = out / "sweep_manifest.csv"
    status = runs["status"].value_counts().to_dict()
    index = [f"# {dataset_title(runs)} degradation study: {', '.join(Path(p).name for p in paths)}\n",
             "Runs: " + ", ".join(f"{n} {s}" for s, n in sorted(status.items())) + ".\n",
             "## Verdict\n", text, "## Table 6\n", md, "## Figure 6\n", "![Figure 6](fig6.png)\n"]
    if progress is not None:
        index += ["## The study: done and pending\n", progress]
    if "fig7_png" in files:
        index += ["## Figure 7\n", "![Figure 7](fig7.png)\n"]
    if "grad_norms_png" in files:
        index += ["## Gradient norms early in training\n", "![Gradient norms](grad_norms.png)\n"]
    (out / "report.md").write_text("\n".join(index))
    files["report"] = out / "report.md"
    return files


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="resnet-report", description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", help="sweep directories (runs/<experiment>/<time>) or run folders")
    ap.add_argument("-o", "--out", help="report folder (default: <first path>/report)")
    ap.add_argument("--wandb-report", metavar="ENTITY/PROJECT", help="also build and save a W&B Report")
    ap.add_argument("--group", help="the sweep's W&B group (default: <experiment>-<sweep folder name>)")
    ap.add_argument("--title", help="title of the W&B Report")
    ap.add_argument("--study", help="list this study's done and pending jobs (conf/study/<name>, e.g. degradation)")
    ap.add_argument("--study-override", action="append", default=[], metavar="KEY=VALUE",
                    help="an override the study ran with (repeatable), as given to resnet-study")
    args = ap.parse_args(argv)
    try:
        for p in args.paths:
            if not Path(p).exists():
                raise ResnetReproError(f"{p} does not exist. Give a sweep directory, e.g. runs/degradation/<time>.")
        if args.wandb_report and "/" not in args.wandb_report:
            raise ResnetReproError(f"--wandb-report {args.wandb_report!r} is not ENTITY/PROJECT, e.g. my-team/resnet_repro.")
        try:
            files = write_report(args.paths, args.out, study=args.study, study_overrides=args.study_override)
        except OSError as ex:
            where = ex.filename or args.out or f"{args.paths[0]}/report"
            raise ResnetReproError(f"Cannot write the report to {where} ({ex.strerror or ex}). "
                                   f"Choose a writable folder with -o <folder>.") from None
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
            raise ResnetReproError("Cannot tell the sweep's W&B group: give --group <experiment>-<sweep folder name>.")
        group = f"{exp[0]}-{sweeps[0]}"
    report = build_wandb_report(entity, project, group, title=args.title,
                                table_markdown=files["table6_md"].read_text(),
                                verdict=files["verdict"].read_text(), eval_metric=f"{eval_split(runs)}_err")
    try:
        report.save()
    except Exception as ex:  # noqa: BLE001 - the local report is already complete
        raise ResnetReproError(
            f"Could not save the W&B Report to {entity}/{project} ({type(ex).__name__}: {ex}). The local "
            f"report in {files['report'].parent} is complete; check `wandb login` and the network, then rerun."
        ) from None
    try:
        return report.url
    except Exception:  # noqa: BLE001 - saved; only the link could not be formed
        return f"{entity}/{project}, report id {report.id}"


if __name__ == "__main__":
    main()
