"""The run's report: warnings a person must not miss, artifact hashes, plots, report.md."""

from __future__ import annotations

import json
import os
from typing import Any

from tfimgopt import _io
from tfimgopt.pipeline.stages.base import EXPORTS, MEASURES, REFERENCE, TRAINS
from tfimgopt.pipeline.variants import at_chance, chance_level, select_variant
from tfimgopt.pipeline.verify import save_verification_data


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


def artifact_hashes(out: str, folders: tuple[str, ...] = ()) -> list[dict[str, Any]]:
    """SHA-256 and byte size of every model, exported artifact (a file, or a folder hashed as
    a tree) and plot in a run folder, and of its config.json, report.md and verification.npz.

    `folders`: artifact folders beyond `ARTIFACT_FOLDERS` (a plugin exporter's own)."""
    from tfimgopt.pipeline.verify import ARTIFACT_FOLDERS

    rels = [n for n in ("config.json", "report.md", "verification.npz") if os.path.isfile(os.path.join(out, n))]
    for folder in sorted(set(ARTIFACT_FOLDERS) | set(folders)):
        root = os.path.join(out, folder)
        if os.path.isdir(root):
            rels += [f"{folder}/{n}" for n in sorted(os.listdir(root)) if not n.startswith(".")]
    paths = {rel: os.path.join(out, rel) for rel in rels}
    return [{"path": rel, "sha256": _io.sha256_tree(p), "bytes": _io.tree_bytes(p)} for rel, p in paths.items()]


def time_note(seconds: dict[str, float], roles: dict[str, str]) -> str:
    """Stage time, and the share of the stages that export and measure (by role, not name)."""
    total = sum(seconds.values())
    tail = sum(seconds.get(key, 0.0) for key, role in roles.items() if role in (EXPORTS, MEASURES))
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


def quantization_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A quantized variant's debugger table, its worst layers, and (LiteRT Quantizer) its
    recipe and the layers it kept in float."""
    from tfimgopt.export.debugger import worst_layers

    check = entry["verify"]
    return {"layer_errors": entry["layer_errors"], "worst": [r["layer"] for r in worst_layers(entry["layer_errors"])],
            **{k: check[k] for k in ("backend", "recipe", "float_layers", "fallback_layers") if k in check}}


def quantization_note(report: dict[str, Any]) -> list[str]:
    """report.md's lines on the quantized variants: the layers that lose most, float layers."""
    if not report.get("quantization"):
        return []
    lines = ["## Quantization debugger", "",
             "Per weighted layer, each quantized file against the float32 export on validation images (all of it "
             "in report.json): the layers that add the most noise (noise-to-signal ratio added; ~1 destroys the "
             "layer's output), and what stayed float.", "",
             "| variant | worst layers (noise added) | final SNR (dB) | kept in float |", "|---|---|---:|---|"]
    for name, q in report["quantization"].items():
        rows = {r["layer"]: r for r in q["layer_errors"]}
        worst = ", ".join(f"{layer} ({rows[layer]['noise_added']:.2g})" for layer in q["worst"])
        final = q["layer_errors"][-1]["snr_db"] if q["layer_errors"] else None
        kept = ", ".join(q.get("float_layers") or []) or "-"
        fallback = sorted(set(q.get("fallback_layers") or {}) - set(q.get("float_layers") or []))
        if fallback:
            more = f" +{len(fallback) - 5}" if len(fallback) > 5 else ""
            kept += f"; int8, not int4: {', '.join(fallback[:5])}{more}"
        lines.append(f"| {name} | {worst or '-'} | {'' if final is None else f'{final:.1f}'} | {kept} |")
    float_layers = report["config"]["export"]["float_layers"]  # not-a-switch: the config's export section
    if float_layers:
        lines += ["", f"`export.float_layers` {float_layers}: kept in float in every LiteRT Quantizer file "
                      "(QAT variants are the converter's, which keeps none)."]
    return [*lines, ""]


def metadata_note(report: dict[str, Any]) -> str:
    """Which files carry TFLite metadata, or why none does."""
    written = report.get("tflite_metadata", [])
    export = report["config"]["export"]  # not-a-switch: the config's export section
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
        yours, base = report["your_model"], report[report["reference"]]
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
        *[f"| {r['stage']} | {r['model']} | "
          + ("" if r["test_accuracy"] is None else f"{r['test_accuracy']:.4f}") + f" | {r['notes']} |"
          for r in report["training"]],
    ]
    sel = report["selection"]
    if report.get("warnings"):
        lines[2:2] = ["> **WARNING**", *[f"> - {w}" for w in report["warnings"]], ""]
    lines += [
        "",
        "## Exported variants (measured on the test split; TFLite files in the LiteRT interpreter)",
        "",
        table,
        "",
        resolution_note(report["chance"]),
        "",
        metadata_note(report),
        "",
        *quantization_note(report),
        *(["Failed verification (left out of the selection): "
           + "; ".join(f"**{n}**: {e['reason']}" for n, e in report["failed_variants"].items()), ""]
          if report.get("failed_variants") else []),
        f"Selected for `{sel['optimize_for']}` with at most {sel['max_accuracy_drop_points']:g} points of "
        f"accuracy lost: **{sel['variant']}** (`{sel['path']}`). {sel['reason']}." if sel["variant"] else
        f"Selected for `{sel['optimize_for']}`: **nothing**. {sel['reason']}",
        "",
        *[f"![{os.path.basename(p)}]({p})" for p in report["plots"]],
        "",
        f"{time_note(report['stage_seconds'], report['stage_roles'])} Artifact hashes (SHA-256) are in report.json; "
        "`tfimgopt verify RUN_DIR` re-checks them.",
        "",
    ]
    return "\n".join(lines)


def write_report(ctx: Any, stage_seconds: dict[str, float], elapsed: float, by_key: dict[str, dict[str, Any]],
                 roles: dict[str, str], training: list[dict[str, Any]], strategy_desc: str, precision: str
                 ) -> dict[str, Any]:
    """Selects the variant to ship, draws the plots, records verification outputs and writes
    report.json and report.md (with every artifact's hash). `roles`: stage key -> role;
    `training`: the rows of the stages' `report_row`."""
    config, out, info = ctx.config, ctx.out, ctx.data.splits.info
    table = next(by_key[k] for k, role in roles.items() if role == MEASURES)
    reference_key = next(k for k, role in roles.items() if role == REFERENCE)
    reference = by_key[reference_key]
    chance = chance_level(ctx.data.splits.test)
    selection = select_variant(table["rows"], config.export.optimize_for, config.export.max_accuracy_drop, chance)
    trained = {k: r for k, r in by_key.items() if roles[k] in (REFERENCE, TRAINS)}
    warnings = run_warnings(trained, table["rows"], chance, ctx.failed)
    pictures = plots(table["rows"], trained, selection["variant"], out)
    sample = next(iter(ctx.data.splits.test.batch(16)))[0].numpy().astype("float32")
    save_verification_data(out, {v.name: (v.path, v.mode) for v in ctx.variants}, sample)
    checks, with_metadata, quantization = {}, [], {}
    for record in ctx.records.values():
        for name, entry in {**record.get("files", {}), **record.get("failed", {})}.items():
            checks[name] = entry["verify"]
            if entry.get("metadata"):
                with_metadata.append(name)
            if entry.get("layer_errors") is not None:
                quantization[name] = quantization_entry(entry)
    report = {
        **({"your_model": ctx.user.report(reference, config.data.input_range)} if ctx.user else {}),
        "settled": ctx.notes,
        "dataset": {"name": info.name, "num_classes": info.num_classes, "image_shape": list(info.image_shape),
                    "num_examples": dict(info.num_examples), "unlabelled": ctx.data.num_unlabelled},
        "strategy": strategy_desc,
        "replicas": ctx.strategy.num_replicas_in_sync, "precision": precision,
        **trained,
        "reference": reference_key,
        "training": training,
        "config": json.loads(json.dumps(config.to_dict())),
        "verification": checks,
        "tflite_metadata": with_metadata,
        "quantization": quantization,
        "variants": table["rows"],
        "table": table["markdown"],
        "failed_variants": {name: {"reason": entry["reason"], "verify": entry["verify"]}
                            for name, entry in ctx.failed.items()},
        "chance": chance,
        "warnings": warnings,
        "selection": selection,
        "plots": pictures,
        "seconds": round(elapsed, 2),
        "stage_seconds": stage_seconds,
        "stage_roles": roles,
        # Models read back from disk (a resumed run's skipped stages); a fresh run keeps them in memory.
        "model_loads": [{"model": name, "seconds": seconds} for name, seconds in ctx.loads],
    }
    _io.write_text(os.path.join(out, "report.md"), report_markdown(report, table["markdown"]))
    folders = tuple({v.path.split("/")[0] for v in ctx.variants})
    report["artifacts"] = artifact_hashes(out, folders)  # report.md included; report.json cannot hash itself
    _io.write_json(os.path.join(out, "report.json"), report)
    summary = (f"\n{table['markdown']}\n\n{resolution_note(chance)}\n{time_note(stage_seconds, roles)}\n"
               f"selected: {selection['reason']}\nrun folder: {out}")
    ctx.log(summary + ("\n" + warning_box(warnings) if warnings else ""))
    return report
