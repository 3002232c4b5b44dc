"""The run's report: warnings a person must not miss, artifact hashes, plots, report.md."""

from __future__ import annotations

import os
from typing import Any

from tfimgopt._io import sha256_file
from tfimgopt.pipeline.variants import at_chance


def run_warnings(records: dict[str, Any], rows: list[dict[str, Any]], chance: dict[str, Any],
                 failed: dict[str, Any]) -> list[str]:
    """What a person must not miss in a run: models at chance, failed variants."""
    warnings = []
    trained = [(name, r["test_accuracy"]) for name, r in records.items() if "test_accuracy" in r]
    low = [f"{name} {100 * acc:.2f}%" for name, acc in trained if at_chance(acc, chance)]
    low += [f"{r['variant']} {100 * r['accuracy']:.2f}%" for r in rows if at_chance(r["accuracy"], chance)]
    if low:
        warnings.append(
            f"AT CHANCE LEVEL: {', '.join(low)}; chance is {100 * chance['accuracy']:.2f}% (majority class) "
            f"+ {100 * chance['noise']:.2f} points of noise on {chance['test_images']} test images. These models "
            "have not learned the task: train longer, use more data, or check the labels.")
    if failed:
        warnings.append(f"{len(failed)} variant(s) failed verification and were left out: " + "; ".join(
            f"{name}: {entry['reason']}" for name, entry in failed.items()) + ". A rerun retries them.")
    return warnings


def warning_box(warnings: list[str]) -> str:
    bar = "!" * 78
    return "\n".join([bar, *[f"! WARNING: {w}" for w in warnings], bar])


def artifact_hashes(out: str) -> list[dict[str, Any]]:
    """SHA-256 and byte size of every model, TFLite file and plot in a run folder, and of
    its config.json, report.md and verification.npz."""
    rels = [n for n in ("config.json", "report.md", "verification.npz") if os.path.isfile(os.path.join(out, n))]
    for folder in ("models", "tflite", "plots"):
        root = os.path.join(out, folder)
        if os.path.isdir(root):
            rels += [f"{folder}/{n}" for n in sorted(os.listdir(root))
                     if os.path.isfile(os.path.join(root, n)) and not n.startswith(".")]
    paths = {rel: os.path.join(out, rel) for rel in rels}
    return [{"path": rel, "sha256": sha256_file(p), "bytes": os.path.getsize(p)} for rel, p in paths.items()]


def time_note(seconds: dict[str, float]) -> str:
    total = sum(seconds.values())
    tail = seconds.get("export", 0.0) + seconds.get("evaluate", 0.0)
    return (f"Stage time {total:.0f} s: export + evaluation {tail:.0f} s ({100 * tail / max(total, 1e-9):.0f}%), "
            + ", ".join(f"{name} {sec:.0f} s" for name, sec in seconds.items()) + ".")


def resolution_note(chance: dict[str, Any]) -> str:
    return (f"Accuracy resolution: {chance['test_images']} test images, so one image = "
            f"{chance['resolution_points']:.2f} points; chance level (majority class) "
            f"{100 * chance['accuracy']:.2f}% + {100 * chance['noise']:.2f} points of noise.")


def plots(rows, records, chosen, out) -> list[str]:
    from tfimgopt.pipeline.plots import tradeoff_plot, training_curves

    plots_dir = os.path.join(out, "plots")
    paths = [
        tradeoff_plot(rows, "size_bytes", os.path.join(plots_dir, "accuracy_vs_size.png"), chosen=chosen),
        tradeoff_plot(rows, "latency_ms_median", os.path.join(plots_dir, "accuracy_vs_latency.png"), chosen=chosen),
    ]
    histories = {name: os.path.join(out, r["history"]) for name, r in records.items() if r.get("history")}
    curves = training_curves(histories, os.path.join(plots_dir, "training_curves.png"))
    if curves:
        paths.append(curves)
    return [os.path.relpath(p, out) for p in paths]


def metadata_note(report: dict[str, Any]) -> str:
    """Which files carry TFLite metadata, or why none does."""
    written, export = report.get("tflite_metadata", []), report["config"]["export"]
    if written:
        note = (f"TFLite metadata (label names, input normalization, name, version {export['model_version']!r}) "
                f"in {len(written)} of {len(report['verification'])} files: MediaPipe Tasks' ImageClassifier and "
                "the TFLite Task Library load them as-is.")
        if report["dataset"]["image_shape"][-1] == 1:
            note += " MediaPipe takes RGB models only: for it, run with `--set data.channels=3`."
        return note
    return "No TFLite metadata (`export.metadata: off`)."



def report_markdown(report: dict[str, Any], table: str) -> str:
    """The human-readable report of a run."""
    data = report["dataset"]
    lines = ["# tfimgopt run report", ""]
    if report.get("your_model"):
        yours, base = report["your_model"], report["baseline"]
        lines += [f"**Your model** ({yours['source']}{', Keras 3' if yours['keras3'] else ''}): test accuracy "
                  f"**{100 * yours['test_accuracy']:.2f}%** on {report['chance']['test_images']} test images, input "
                  f"range {yours['input_range']}, "
                  + (f"fine-tuned {base['epochs']} epochs first." if base.get("epochs") else "used as it is."), ""]
    if report.get("settled"):
        lines += ["Settled for this run: " + "; ".join(report["settled"]) + ".", ""]
    lines += [
        f"Dataset: {data['name']} ({data['num_classes']} classes, images {tuple(data['image_shape'])}, "
        f"examples {data['num_examples']}" + (f", {data['unlabelled']} unlabelled" if data["unlabelled"] else "")
        + f"). Strategy: {report['strategy']} ({report['replicas']} replica(s)), precision {report['precision']}.",
        "",
        "## Training",
        "",
        "| stage | model | test accuracy (Keras) | notes |",
        "|---|---|---:|---|",
        f"| baseline | {report['baseline']['model']} ({report['baseline']['params']:,} params) | "
        f"{report['baseline']['test_accuracy']:.4f} | |",
    ]
    if "student" in report:
        s = report["student"]
        note = f"alpha {s['alpha']:g}, T {s['temperature']:g}" + (" (tuned)" if s["tuning"] else "")
        note += f", transfer set with {s['unlabelled_images']} unlabelled images" if s["transfer_set"] else ""
        lines.append(f"| distill | {s['model']} ({s['params']:,} params) | {s['test_accuracy']:.4f} | {note} |")
    if "pruned" in report:
        p = report["pruned"]
        lines.append(f"| prune | {p['from']} | {p['test_accuracy']:.4f} | sparsity {p['sparsity']:.1%} "
                     f"(target {p['target_sparsity']:.0%}) |")
    if "qat" in report:
        kept = report["qat"]["preserved_sparsity"]
        lines.append(f"| qat | pruned, sparsity-preserving | | sparsity kept {kept:.1%} |")
    sel = report["selection"]
    if report.get("warnings"):
        lines[2:2] = ["> **WARNING**", *[f"> - {w}" for w in report["warnings"]], ""]
    lines += [
        "",
        "## TFLite variants (measured in the LiteRT interpreter on the test split)",
        "",
        table,
        "",
        resolution_note(report["chance"]),
        "",
        metadata_note(report),
        "",
        *(["Failed verification (left out of the selection): "
           + "; ".join(f"**{n}**: {e['reason']}" for n, e in report["failed_variants"].items()), ""]
          if report.get("failed_variants") else []),
        f"Selected for `{sel['optimize_for']}` with at most {sel['max_accuracy_drop_points']:g} points of "
        f"accuracy lost: **{sel['variant']}** (`{sel['path']}`). {sel['reason']}." if sel["variant"] else
        f"Selected for `{sel['optimize_for']}`: **nothing**. {sel['reason']}",
        "",
        *[f"![{os.path.basename(p)}]({p})" for p in report["plots"]],
        "",
        f"{time_note(report['stage_seconds'])} Artifact hashes (SHA-256) are in report.json; "
        "`tfimgopt verify RUN_DIR` re-checks them.",
        "",
    ]
    return "\n".join(lines)
