"""bench.pretrained's targets, Markdown tables and summary line (from its results dict)."""

from __future__ import annotations

import statistics

#: Issue 28: the port at least as fast as musicnn's TF graph on the same cores, and the worker
#: at least 0.85x what the model alone allows at the same coverage.
PORT_VS_TF = 1.0
WORKER_VS_MODEL = 0.85
HALF_TOP5 = 0.95
TARGET_MODELS = ("musicnn-msd", "vgg-msd")


def model_alone_impl(results: dict) -> str:
    """The model-alone row the worker is compared with: what the worker itself runs."""
    return "after_frozen" if results["device"] == "cpu" else "after"


def worker_rows(results: dict) -> list[dict[str, object]]:
    """Per coverage: medians over rounds, and the model-alone clips/s at that coverage."""
    w = results.get("worker")
    if not w:
        return []
    model = results["models"]["musicnn-msd"]["rates"][model_alone_impl(results)]
    alone = max(float(r["windows_per_s"]) for r in model)
    rows = []
    for c in w["coverages"]:
        runs = [r[f"w{c}"] for r in w["rounds"]]

        def med(key: str, runs=runs) -> float:
            return round(statistics.median(float(r[key]) for r in runs), 3)

        windows = med("windows_per_clip")
        clips = med("clips_per_s")
        rows.append({
            "coverage": c, "windows_per_clip": windows, "clips_per_s": clips,
            "model_alone_clips_per_s": round(alone / windows, 3),
            "vs_model_alone": round(clips * windows / alone, 3),
            "vs_model_alone_rounds": [round(float(r["clips_per_s"]) * windows / alone, 3)
                                      for r in runs],
            "cpu_ms_per_clip": med("cpu_ms_per_clip"),
            "worker_cpu_ms_per_clip": med("worker_cpu_ms_per_clip"),
            "decoder_cpu_ms_per_clip": med("decoder_cpu_ms_per_clip"),
            "decode_cpu_share": med("decode_cpu_share"),
            "model_ms_per_clip": med("model_ms_per_clip"),
            "model_busy_share": med("model_busy_share"),
            "p95_latency_s": w["latency"][f"w{c}"]["p95"],
        })
    return rows


def targets(results: dict) -> dict[str, dict[str, object]]:
    """Each target: value, bar, met."""
    out: dict[str, dict[str, object]] = {}
    for name in TARGET_MODELS:
        ratios = results["models"].get(name, {}).get("ratios", {})
        if "after_vs_tf" in ratios:
            value = ratios["after_vs_tf"]["best_vs_best"]
            out[f"{name}_after_vs_tf"] = {"value": value, "target": f">= {PORT_VS_TF}",
                                          "met": value >= PORT_VS_TF}
    for row in worker_rows(results):
        value = row["vs_model_alone"]
        out[f"worker_w{row['coverage']}_vs_model_alone"] = {
            "value": value, "target": f">= {WORKER_VS_MODEL}", "met": value >= WORKER_VS_MODEL}
    for name, half in results.get("half_precision", {}).items():
        out[f"{name}_half_top5"] = {"value": half["top5_unchanged"], "target": f">= {HALF_TOP5}",
                                    "met": half["top5_unchanged"] >= HALF_TOP5}
    return out


def _rate(rows: list[dict], batch: int, key: str = "windows_per_s") -> object:
    return next((r[key] for r in rows if r["batch"] == batch), "")


def tables(results: dict) -> str:
    """The model-alone table per model, the worker table, the targets."""
    impls = ["tf", "before", "after", "after_frozen", "after_half"]
    lines = [f"device {results['device']}, {results['threads']} threads, "
             f"{results['machine']['cpu']}; TF: {results['tf']}"]
    if "peak" in results:
        p = results["peak"]
        lines.append(f"fp32 peak: nominal {p['nominal_gflops']} GFLOP/s ({p['nominal_assumes']}), "
                     f"measured sgemm {p['sgemm_gflops']} GFLOP/s")
    for name, m in results["models"].items():
        present = [i for i in impls if i in m["rates"]]
        lines += ["", f"### {name} (windows/s; {m['flops_per_window'] / 1e9:.2f} GFLOP/window "
                  f"nominal, {m['flops_computed_per_window'] / 1e9:.2f} computed by the port)", "",
                  "| batch | " + " | ".join(present) + " | after/TF | CPU ms/window TF, after"
                  " | GFLOP/s after (computed / nominal) |", "|---" * (len(present) + 4) + "|"]
        for bs in results["batches"]:
            tf = _rate(m["rates"].get("tf", []), bs)
            after = _rate(m["rates"]["after"], bs)
            ratio = f"{after / tf:.2f}" if tf else "n/a"
            cpu = (f"{_rate(m['rates'].get('tf', []), bs, 'cpu_ms_per_window') or 'n/a'}, "
                   f"{_rate(m['rates']['after'], bs, 'cpu_ms_per_window')}")
            lines.append(f"| {bs} | " + " | ".join(str(_rate(m["rates"][i], bs)) for i in present)
                         + f" | {ratio} | {cpu} | {_rate(m['rates']['after'], bs, 'gflops_computed')}"
                         f" / {_rate(m['rates']['after'], bs, 'gflops_nominal')} |")
    rows = worker_rows(results)
    if rows:
        lines += ["", f"### worker, musicnn-msd, {results['worker']['clips']} × 30 s mp3 "
                  f"(medians of {len(results['worker']['rounds'])} rounds)", "",
                  "| coverage | windows/clip | clips/s | model alone clips/s | worker/model |"
                  " CPU ms/clip (worker + decoders) | decode CPU share | model busy | p95 s |",
                  "|---" * 9 + "|"]
        for r in rows:
            lines.append(
                f"| {r['coverage']} | {r['windows_per_clip']} | {r['clips_per_s']} | "
                f"{r['model_alone_clips_per_s']} | {r['vs_model_alone']} | {r['cpu_ms_per_clip']}"
                f" ({r['worker_cpu_ms_per_clip']} + {r['decoder_cpu_ms_per_clip']}) | "
                f"{r['decode_cpu_share']} | {r['model_busy_share']} | {r['p95_latency_s']} |")
    for name, h in results.get("half_precision", {}).items():
        lines.append(f"float16 {name}: top-5 unchanged on {h['top5_unchanged']:.1%} of "
                     f"{h['windows']} windows, max |Δp| {h['max_abs_diff']}")
    lines += ["", "targets: " + ", ".join(
        f"{k} {t['value']} ({t['target']}: {'met' if t['met'] else 'MISSED'})"
        for k, t in results["targets"].items())]
    return "\n".join(lines) + "\n"


def summary(results: dict) -> str:
    """One line: the headline ratios and how many targets were met."""
    parts = []
    for name, m in results["models"].items():
        best = max(float(r["windows_per_s"]) for r in m["rates"]["after"])
        ratio = m["ratios"].get("after_vs_tf", {}).get("best_vs_best", "n/a")
        parts.append(f"{name} {best:.0f} win/s (x{ratio} TF, "
                     f"x{m['ratios'].get('after_vs_before', {}).get('best_vs_best', 'n/a')} before)")
    for r in worker_rows(results):
        parts.append(f"worker w{r['coverage']} {r['clips_per_s']} clips/s = "
                     f"x{r['vs_model_alone']} model alone")
    met = sum(t["met"] for t in results["targets"].values())
    return (f"bench.pretrained{' (quick)' if results['quick'] else ''} [{results['device']}]: "
            + " | ".join(parts) + f" | targets met {met}/{len(results['targets'])}")
