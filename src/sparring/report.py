"""A self-contained HTML report of one or more run directories, plus PNG plots.

Everything is built from the run directory alone. Plots are inline SVG (matplotlib), so the page
opens offline with no external assets; every piece of text from a run -- prompts, responses, names
-- goes through ``html.escape``. PNG copies of the plots are written next to the report.
"""

from __future__ import annotations

import html
import io
import json
from pathlib import Path

from sparring.errors import SparringError
from sparring.runlog import read_jsonl

STAGE_COLOURS = {"defender": "#1f77b4", "attacker": "#d62728"}


def load_run(run_dir: Path) -> dict:
    if not (run_dir / "metrics.jsonl").exists():
        raise SparringError(
            f"'{run_dir}' is not a run directory with metrics (no metrics.jsonl)",
            hint="pass the folder a `sparring train` run wrote",
        )
    evals = run_dir / "eval.json"
    return {
        "name": run_dir.name,
        "metrics": read_jsonl(run_dir / "metrics.jsonl"),
        "attacks": read_jsonl(run_dir / "attacks.jsonl"),
        "eval": json.loads(evals.read_text()) if evals.exists() else {},
        "config": (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").exists() else "",
    }


def _figure(runs: list[dict], key: str, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=100)
    for run in runs:
        steps = [m["step"] for m in run["metrics"] if m.get(key) is not None]
        values = [m[key] for m in run["metrics"] if m.get(key) is not None]
        if not values:
            continue
        ax.plot(steps, values, label=run["name"], linewidth=1.2)
        for stage, colour in STAGE_COLOURS.items():
            xs = [m["step"] for m in run["metrics"] if m["stage"] == stage and m.get(key) is not None]
            ys = [m[key] for m in run["metrics"] if m["stage"] == stage and m.get(key) is not None]
            ax.scatter(xs, ys, s=10, color=colour, zorder=3, label=f"{stage} stage" if run is runs[0] else None)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig, plt


PLOTS = [
    ("asr", "ASR of the step's attacks (judge)"),
    ("stage_eval_asr", "held-out ASR at each stage boundary (judge)"),
    ("stage_eval_over_refusal", "held-out over-refusal at each stage boundary"),
    ("intent_kept", "share of attacks that kept their seed's harmful intent"),
    ("defender_reward", "defender reward"),
    ("attacker_reward", "attacker reward"),
    ("self_bleu", "SelfBLEU of attacks vs history"),
    ("embedding_similarity", "embedding similarity vs history"),
    ("diversity_within_batch", "1 - SelfBLEU within the batch"),
    ("defender_ref_kl", "defender KL to reference"),
    ("attacker_ref_kl", "attacker KL to reference"),
    ("defender_policy_loss", "defender policy loss"),
    ("attacker_policy_loss", "attacker policy loss"),
]


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


# Only the report's own script may run, whatever text a run holds.
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; script-src 'sha256-REPORTSCRIPT'"


def build_report(run_dirs: list[Path], output: Path, samples: int = 30) -> Path:
    runs = [load_run(d) for d in run_dirs]
    output.parent.mkdir(parents=True, exist_ok=True)
    png_dir = output.with_suffix("")
    png_dir = png_dir.parent / f"{png_dir.name}_plots"
    png_dir.mkdir(exist_ok=True)
    figures = []
    for key, title in PLOTS:
        if not any(m.get(key) is not None for run in runs for m in run["metrics"]):
            continue
        fig, plt = _figure(runs, key, title)
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg")
        fig.savefig(png_dir / f"{key}.png", format="png")
        plt.close(fig)
        svg = buffer.getvalue()
        svg = svg[svg.index("<svg") :]  # drop the XML prolog and doctype
        figures.append(f'<figure class="plot" data-metric="{_e(key)}">{svg}</figure>')

    # Exploitability: exploit runs (`sparring exploit`) found inside the given run directories.
    exploits = [
        {**load_run(e), "name": f"{d.name} / {e.name}", "result": json.loads((e / "exploit.json").read_text())}
        for d in run_dirs
        for e in sorted(d.glob("exploit-*"))
        if (e / "exploit.json").exists() and (e / "metrics.jsonl").exists()
    ]
    exploit_rows = []
    if exploits:
        fig, plt = _figure(exploits, "asr", "exploitability: attacker success vs the frozen/fresh player, per step")
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg")
        fig.savefig(png_dir / "exploitability.png", format="png")
        plt.close(fig)
        svg = buffer.getvalue()
        figures.append(f'<figure class="plot" data-metric="exploitability">{svg[svg.index("<svg") :]}</figure>')
        for e in exploits:
            first, last = e["result"]["asr_first_third"], e["result"]["asr_last_third"]
            exploit_rows.append(
                f"<tr><td>{_e(e['name'])}</td><td>{_e(e['result'].get('side'))}</td><td>{e['result']['steps']}</td>"
                f"<td>{first['value']:.3f} [{first['ci'][0]:.2f}, {first['ci'][1]:.2f}]</td>"
                f"<td>{last['value']:.3f} [{last['ci'][0]:.2f}, {last['ci'][1]:.2f}]</td></tr>"
            )
    exploit_table = (
        "<h2>Exploitability</h2><table><tr><th>exploit run</th><th>fresh player</th><th>steps</th>"
        "<th>attacker ASR, first third [95% CI]</th><th>attacker ASR, last third [95% CI]</th></tr>"
        + "".join(exploit_rows)
        + "</table>"
        if exploit_rows
        else ""
    )

    def rate(value: float, interval: list | None) -> str:
        return f"{value:.3f}" + (f" [{interval[0]:.2f}, {interval[1]:.2f}]" if interval else "")

    table = [
        "<table><tr><th>run</th><th>evaluation</th><th>ASR by judge [95% CI]</th>"
        "<th>over-refusal: benign-edgy; ordinary [95% CI]</th></tr>"
    ]
    for run in runs:
        for label, result in run["eval"].items():
            ci = result.get("ci", {})
            asr = ", ".join(f"{_e(k)} {rate(v, ci.get(f'asr/{k}'))}" for k, v in result.get("asr", {}).items())
            refused = rate(result.get("over_refusal", float("nan")), ci.get("over_refusal"))
            if "over_refusal_ordinary" in result:
                refused += f"; ordinary {rate(result['over_refusal_ordinary'], ci.get('over_refusal_ordinary'))}"
            table.append(f"<tr><td>{_e(run['name'])}</td><td>{_e(label)}</td><td>{asr}</td><td>{refused}</td></tr>")
    table.append("</table>")

    attack_rows = []
    for run in runs:
        chosen = run["attacks"][-samples:]
        for a in chosen:
            responses = "<hr>".join(f"<pre>{_e(r)}</pre>" for r in a.get("responses", []))
            p_unsafe = ", ".join(f"{v:.2f}" for v in a.get("p_unsafe", []))
            attack_rows.append(
                f"<tr><td>{_e(run['name'])}</td><td>{_e(a.get('step'))}</td><td>{_e(a.get('stage'))}</td>"
                f"<td><pre>{_e(a.get('prompt', ''))}</pre></td><td>{responses}</td><td>{p_unsafe}</td>"
                f"<td>{a.get('self_bleu', 0):.3f}</td></tr>"
            )
    configs = "".join(
        f"<details><summary>config of {_e(r['name'])}</summary><pre>{_e(r['config'])}</pre></details>" for r in runs
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<title>sparring report: {_e(", ".join(r["name"] for r in runs))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 1400px; }}
.plots {{ display: flex; flex-wrap: wrap; gap: 1em; }}
figure.plot {{ margin: 0; border: 1px solid #ddd; padding: .5em; }}
figure.plot svg {{ width: 600px; height: auto; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: .3em .6em; vertical-align: top; text-align: left; }}
pre {{ white-space: pre-wrap; word-break: break-word; max-width: 40em; margin: 0; font-size: 85%; }}
</style></head>
<body data-plots="{len(figures)}">
<h1>sparring report</h1>
<p>Runs: {_e(", ".join(r["name"] for r in runs))}. Markers colour each step by stage
(<span style="color:{STAGE_COLOURS["defender"]}">defender</span>,
<span style="color:{STAGE_COLOURS["attacker"]}">attacker</span>).</p>
<h2>Held-out evaluations</h2>
{"".join(table)}
{exploit_table}
<h2>Training curves</h2>
<div class="plots">{"".join(figures)}</div>
<h2>Attacks (last {samples} per run)</h2>
<table><tr><th>run</th><th>step</th><th>stage</th><th>attack</th><th>responses</th><th>P(unsafe)</th><th>SelfBLEU</th></tr>
{"".join(attack_rows)}</table>
{configs}
<script>REPORTSCRIPT_BODY</script>
</body></html>
"""
    script = "document.body.dataset.rendered = String(document.querySelectorAll('figure.plot svg').length);"
    import base64
    import hashlib

    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    page = page.replace("REPORTSCRIPT_BODY", script).replace("sha256-REPORTSCRIPT", f"sha256-{digest}")
    output.write_text(page, encoding="utf-8")
    return output
