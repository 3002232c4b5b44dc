"""`tfimgopt doctor`: what is installed, what TensorFlow sees, and every known-bad combination with its fix.

The version checks run before TensorFlow is imported, so a combination that would abort
or hang the import is reported instead of crashing the doctor.
"""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from tfimgopt._platform import (
    OPENCV,
    REPORTED,
    Finding,
    find_problems,
    installed_versions,
    keras_backend_problem,
    pip_conflicts,
    tpu_hints,
)
from tfimgopt.errors import TfimgoptError

#: The distributions whose `pip check` conflicts the doctor reports: tfimgopt's requirements
#: (setup.cfg) and the reported stack, less MediaPipe (an optional reader, not ours to install).
DEPENDENCIES = tuple(n for n in REPORTED if n != "mediapipe") + (
    "tfimgopt", "scikit-learn", "matplotlib", "pillow", "pyyaml")


@dataclass
class Diagnosis:
    """What `diagnose()` found; `ok` is False when any known problem was found."""

    python: str
    versions: dict[str, str | None]
    tpu_hints: list[str]
    problems: list[Finding]
    devices: list[str] = field(default_factory=list)
    strategy: str | None = None
    precision: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        """The report, one line each, as `tfimgopt doctor` prints it."""
        from tfimgopt import __version__

        rows = [("tfimgopt", __version__), ("python", self.python)]
        rows += [(name, version or "-") for name, version in self.versions.items()]
        rows += [
            ("TPU", ", ".join(self.tpu_hints) if self.tpu_hints else "none visible"),
            ("TPU_LOAD_LIBRARY", os.environ.get("TPU_LOAD_LIBRARY", "(unset)")),
            ("devices", ", ".join(self.devices) if self.devices else "(TensorFlow not imported)"),
            ("strategy (auto)", self.strategy or "-"),
            ("precision (auto)", self.precision or "-"),
        ]
        width = max(len(name) for name, _ in rows) + 2
        out = [f"{name:<{width}}{value}" for name, value in rows]
        out += [f"note: {note}" for note in self.notes]
        if self.problems:
            out.append(f"{len(self.problems)} known problem(s):")
            out += [f"  - {p.problem}\n    fix: {p.fix}" for p in self.problems]
        else:
            out.append("no known problems")
        return out


def diagnose() -> Diagnosis:
    """Checks the installation, then (if that is safe) imports TensorFlow and asks it.

    Returns:
        A `Diagnosis`. TensorFlow is not imported when a fatal combination was found.
    """
    versions = installed_versions(REPORTED)
    hints = tpu_hints()
    result = Diagnosis(
        python=f"{platform.python_version()} ({sys.executable})",
        versions=versions,
        tpu_hints=hints,
        problems=find_problems({**versions, **installed_versions(OPENCV)}, tpu_visible=bool(hints)),
    )
    backend = keras_backend_problem()
    if backend is not None:
        result.problems.append(backend)
        result.notes.append("TensorFlow was not imported: Keras 3 cannot load with this KERAS_BACKEND.")
        return result
    conflicts = pip_conflicts(DEPENDENCIES)
    if conflicts:
        result.problems.append(Finding(
            f"pip check reports {len(conflicts)} conflict(s) involving tfimgopt's dependencies: "
            + "; ".join(conflicts), "install what each line asks for, or see the README's \"Where it runs\"."))
    if any(p.fatal for p in result.problems):
        result.notes.append("TensorFlow was not imported: with these packages the import would abort or wait.")
        return result
    try:
        from tfimgopt._quiet import start_tensorflow

        start_tensorflow()  # TensorFlow's start-up lines held back on the command line (shown with --verbose)
        from tfimgopt.compat import tf
        from tfimgopt.distribute import choose_precision, create_strategy, strategy_kind
    except TfimgoptError as err:  # Keras 3 bound first, or an install compat refuses: its message has the fix
        result.problems.append(Finding(f"{type(err).__name__}: {err}", "as the message says."))
        return result
    except Exception as err:  # noqa: BLE001 - each failure here is a finding to print, not a crash
        result.problems.append(Finding(f"importing TensorFlow or tfimgopt failed: {type(err).__name__}: {err}",
                                       "reinstall: pip install --force-reinstall tfimgopt (same source as before)."))
        return result
    result.devices = [f"{d.device_type}:{d.name.rsplit(':', 1)[-1]}" for d in tf.config.list_physical_devices()]
    try:
        strategy = create_strategy("auto", verbose=False)
        result.strategy = (f"{type(strategy).__name__} on {strategy_kind(strategy).upper()}, "
                           f"{strategy.num_replicas_in_sync} replica(s)")
        result.precision = choose_precision("auto", strategy)
    except Exception as err:  # noqa: BLE001
        result.problems.append(Finding(f"create_strategy('auto') failed: {type(err).__name__}: {err}",
                                       "see the message; `create_strategy('default')` always works on the CPU."))
    return result


def doctor(print_fn: Callable[[str], None] = print) -> int:
    """Prints the diagnosis and returns the exit status of `tfimgopt doctor` (0: no known problem).

    Example:
        >>> from tfimgopt.doctor import doctor
        >>> status = doctor()  # doctest: +SKIP
    """
    result = diagnose()
    for line in result.lines():
        print_fn(line)
    return 0 if result.ok else 1
