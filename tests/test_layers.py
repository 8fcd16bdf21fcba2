"""The layer rules of docs/design/architecture.md ("Packages and layer rules"), checked.

Each rule imports every module of a package (walked with ``pkgutil``) in a fresh interpreter and then looks
at ``sys.modules``: a forbidden top-level package there breaks the rule. An import hook names the package
module whose import statement (directly, or through a third-party library) first asked for it.
"""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
QT = ("PyQt6", "PyQt5", "PySide6", "PySide2", "pyqtgraph")

# (what is imported, forbidden top-level packages). A package name walks all its modules; a module name
# imports just that module (and what it imports).
RULES = {
    "mapping": ("torch", *QT, "m2hmx", "app"),  # numpy + Open3D only: the interface stays light
    "m2hmx": (*QT, "app", "mapping"),  # the network and data never know the viewer or the map ...
    "app.map_cli": QT,  # the headless m2hmx-map runs without a display
    "app.map_run": QT,  # ... and its library call, which the benchmarks share
    "app.session": QT,  # the viewer's model: tested without a display
    "app.mapping_process": ("torch", *QT),  # the viewer's mapping process (spawned): no Qt, no torch
}
# ... except the small numpy/stdlib pieces both sides share: the IMU samples a Frame carries (and their one-line
# error), and the atomic file writer.
ALLOWED = {"m2hmx": ("mapping", "mapping.imu", "mapping.interface", "mapping.atomic")}

_CHILD = r"""
import importlib, json, pkgutil, sys, traceback
root, target = sys.argv[1], sys.argv[2]
forbidden, allowed = set(json.loads(sys.argv[3])), set(json.loads(sys.argv[4]))
sys.path.insert(0, root)
blame = {}

class Watch:  # records who asks for a forbidden package; never imports anything itself
    def find_spec(self, name, path=None, target_=None):
        top = name.split(".")[0]
        if top in forbidden and name not in allowed and top not in blame:
            frame = sys._getframe(1)
            while frame is not None:
                mod = frame.f_globals.get("__name__", "")
                if mod == target or mod.startswith(target.split(".")[0] + "."):
                    blame[top] = mod
                    break
                frame = frame.f_back
        return None

sys.meta_path.insert(0, Watch())
before = set(sys.modules)
report = {"modules": [], "errors": {}, "foreign": []}
try:
    first = importlib.import_module(target)
    names = [target]
    if hasattr(first, "__path__"):
        names += [m.name for m in pkgutil.walk_packages(first.__path__, target + ".")]
    for name in names:
        try:
            mod = importlib.import_module(name)
        except Exception as exc:
            report["errors"][name] = traceback.format_exception_only(type(exc), exc)[-1].strip()
            continue
        report["modules"].append(name)
        if not str(getattr(mod, "__file__", "")).startswith(root):
            report["foreign"].append(f"{name} from {mod.__file__}")
except Exception as exc:
    report["errors"][target] = traceback.format_exception_only(type(exc), exc)[-1].strip()
loaded = {m.split(".")[0] for m in set(sys.modules) - before if m not in allowed}
report["forbidden"] = {top: blame.get(top, "?") for top in sorted(forbidden & loaded)}
print(json.dumps(report))
"""


def import_report(target: str, forbidden, allowed=()) -> dict:
    """Import ``target`` (every module, if a package) in a fresh interpreter and report what it loaded."""
    run = subprocess.run([sys.executable, "-c", _CHILD, str(ROOT), target, json.dumps(sorted(forbidden)),
                          json.dumps(sorted(allowed))],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"importing {target} crashed the interpreter: {run.stderr.strip()[-2000:]}"
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("target", list(RULES))
def test_layer_rule(target):
    forbidden = RULES[target]
    report = import_report(target, forbidden, ALLOWED.get(target, ()))
    assert not report["errors"], f"modules of {target} that do not import: {report['errors']}"
    assert not report["foreign"], f"imported from outside this checkout: {report['foreign']}"
    if "." not in target:  # a package: the walk reached every module file of it
        files = {p for p in (ROOT / target).rglob("*.py")}
        expected = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__") for p in files}
        assert set(report["modules"]) == expected
    broken = [f"{top} (first asked for by {who})" for top, who in report["forbidden"].items()]
    assert not broken, f"{target} must not import {', '.join(broken)}"


def test_the_check_sees_an_indirect_forbidden_import(tmp_path):
    """The check itself: a package whose submodule imports a forbidden package through a helper fails it,
    and the blame names the submodule."""
    pkg = tmp_path / "layerprobe"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "clean.py").write_text("import json\n")
    (pkg / "sub" / "leaky.py").write_text("import email.mime.text\n")  # stands in for a forbidden library
    run = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path), "layerprobe", json.dumps(["email"]), "[]"],
                         capture_output=True, text=True, timeout=60)
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert sorted(report["modules"]) == ["layerprobe", "layerprobe.sub", "layerprobe.sub.clean",
                                         "layerprobe.sub.leaky"]
    assert report["forbidden"] == {"email": "layerprobe.sub.leaky"}
