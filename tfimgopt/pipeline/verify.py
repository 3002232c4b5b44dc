"""Run-folder integrity: the recorded test outputs of every exported artifact, and `verify_run`."""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from tfimgopt import _io
from tfimgopt.errors import ConfigError, TfimgoptError, VerificationError, received

VERIFY_FILE = "verification.npz"
#: Run-folder subfolders whose every entry must be listed in report.json.
ARTIFACT_FOLDERS = ("models", "tflite", "exports", "plots")


def save_verification_data(out: str, variants: dict[str, tuple[str, str]], images: np.ndarray) -> str:
    """Stores a few test inputs and every artifact's outputs on them, for `verify_run`.

    Args:
        out: The run folder.
        variants: `{variant name: (run-folder-relative path, exporter name)}`.
        images: The test inputs.
    """
    from tfimgopt.export import open_artifact

    arrays = {"inputs": images}
    for name, (rel, mode) in variants.items():
        arrays[f"out:{name}"] = open_artifact(os.path.join(out, rel), mode).predict(images)
    path = os.path.join(out, VERIFY_FILE)
    _io.write_with(path, lambda tmp: _save_npz(tmp, arrays))
    return path


def _save_npz(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _load_report(run_dir: str) -> dict[str, Any]:
    report_path = os.path.join(run_dir, "report.json")
    if not os.path.isfile(report_path):
        raise ConfigError(f"No report.json in the run folder (is the run finished?). {received('run_dir', run_dir)}")
    try:
        with open(report_path, encoding="utf-8") as f:
            report = json.load(f)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise VerificationError(f"{run_dir} failed verification:\n  report.json: not valid JSON ({err})") from None
    problems = []
    if not isinstance(report, dict):
        problems.append("report.json: not a JSON object")
    else:
        artifacts, variants = report.get("artifacts"), report.get("variants")
        if not isinstance(artifacts, list) or not artifacts or not all(
                isinstance(a, dict) and isinstance(a.get("path"), str) and isinstance(a.get("sha256"), str)
                and isinstance(a.get("bytes"), int) for a in artifacts):
            problems.append("report.json: lists no artifacts (or malformed ones), so there is nothing to check")
        if not isinstance(variants, list) or not variants or not all(
                isinstance(v, dict) and isinstance(v.get("variant"), str) and isinstance(v.get("path"), str)
                for v in variants):
            problems.append("report.json: lists no variants (or malformed ones), so no exported file can be re-run")
    if problems:
        raise VerificationError(f"{run_dir} failed verification:\n  " + "\n  ".join(problems))
    return report


def _unlisted(run_dir: str, listed: set[str]) -> list[str]:
    """Entries of the artifact folders that the report does not list (added after the run)."""
    extra = []
    folders = sorted(set(ARTIFACT_FOLDERS) | {rel.split("/")[0] for rel in listed if "/" in rel})
    for folder in folders:
        root = os.path.join(run_dir, folder)
        if os.path.isdir(root):
            extra += [f"{folder}/{n}" for n in sorted(os.listdir(root))
                      if not n.startswith(".") and f"{folder}/{n}" not in listed]
    return extra


def verify_run(run_dir: str) -> dict[str, Any]:
    """Re-hashes every artifact recorded in `run_dir/report.json` and re-runs each exported one.

    What it proves: every listed artifact (models, TFLite files, SavedModel folders, plots,
    report.md) has the size and SHA-256 the run recorded; nothing was added to `models/`,
    `tflite/`, `exports/` or `plots/`; and each exported variant, run by its exporter's
    artifact (in a child process where its parser is untrusted, so a corrupt file cannot
    crash this one), gives the outputs recorded at the end of the run on the stored test
    inputs. Variants of exporters from plugins need those plugins loaded
    (`tfimgopt.load_plugin`, CLI `--plugin`). What it cannot prove: that report.json itself is the one the run wrote (a
    consistent rewrite of report.json and the files passes), or that the accuracies in the
    report are still true (`tfimgopt evaluate` re-measures them).

    Raises:
        ConfigError: when there is no report.json (not a finished run folder).
        VerificationError: listing every problem found: a malformed report or
            verification.npz, missing, unlisted or changed files, a TFLite file that does
            not load or crashes LiteRT, and outputs that differ from those recorded.
    """
    from tfimgopt._plugins import LOADED
    from tfimgopt.export import open_artifact

    report = _load_report(run_dir)
    problems, checked, failed_hash = [], 0, set()
    listed = {entry["path"] for entry in report["artifacts"]}
    for entry in report["artifacts"]:
        try:
            path = _io.safe_join(run_dir, entry["path"])
        except ConfigError:
            problems.append(f"{entry['path']!r}: outside the run folder")
            failed_hash.add(entry["path"])
            continue
        if os.path.islink(path) or not os.path.exists(path):
            problems.append(f"{entry['path']}: {'a link' if os.path.islink(path) else 'missing'}")
            failed_hash.add(entry["path"])
            continue
        if os.path.isdir(path) and any(os.path.islink(os.path.join(folder, n))
                                       for folder, dirs, files in os.walk(path) for n in [*dirs, *files]):
            problems.append(f"{entry['path']}: holds a link")
            failed_hash.add(entry["path"])
            continue
        checked += 1
        size = _io.tree_bytes(path)
        if size != entry["bytes"]:
            problems.append(f"{entry['path']}: {size} bytes, report says {entry['bytes']}")
            failed_hash.add(entry["path"])
        elif _io.sha256_tree(path) != entry["sha256"]:
            problems.append(f"{entry['path']}: SHA-256 differs from the report")
            failed_hash.add(entry["path"])
    problems += [f"{rel}: not listed in the report (added after the run?)" for rel in _unlisted(run_dir, listed)]
    reran = 0
    npz_path = os.path.join(run_dir, VERIFY_FILE)
    paths = {v["variant"]: v["path"] for v in report["variants"]}
    modes = {v["variant"]: v.get("mode") for v in report["variants"]}
    try:
        with np.load(npz_path, allow_pickle=False) as data:
            recorded = {k[4:]: np.asarray(data[k]) for k in data.files if k.startswith("out:")}
            inputs = np.asarray(data["inputs"])
    except FileNotFoundError:
        problems.append(f"{VERIFY_FILE}: missing")
        recorded = {}
    except (OSError, ValueError, KeyError, EOFError) as err:
        problems.append(f"{VERIFY_FILE}: unreadable ({type(err).__name__}: {err})")
        recorded = {}
    for name in sorted(set(paths) - set(recorded)) if recorded else []:
        problems.append(f"{VERIFY_FILE}: no recorded outputs for {name}")
    for name, want in recorded.items():
        rel = paths.get(name)
        if rel is None:
            problems.append(f"{VERIFY_FILE}: outputs of {name!r}, which the report does not list")
            continue
        if rel in failed_hash:
            continue  # never run a file whose hash already failed
        try:
            artifact = open_artifact(_io.safe_join(run_dir, rel), modes.get(name) or None)
        except ConfigError as err:
            problems.append(f"{rel}: cannot be opened here ({err}; an exporter from a plugin needs --plugin)")
            continue
        try:
            got = artifact.predict_isolated(inputs, tuple(LOADED))
        except (TfimgoptError, ConfigError) as err:
            problems.append(f"{rel}: does not run ({err})")
            continue
        reran += 1
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-5, atol=1e-5):
            diff = float(np.abs(got - want).max()) if got.shape == want.shape else float("nan")
            problems.append(f"{rel}: outputs differ from the recorded ones (max diff {diff:.3g})")
    if problems:
        raise VerificationError(f"{run_dir} failed verification:\n  " + "\n  ".join(problems))
    return {"artifacts": checked, "rerun": reran}
