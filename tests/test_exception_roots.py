"""One exception root per package (issue #20): every exception class m2hmx defines derives from M2HMXError, every one
mapping defines from MappingError, keeping its builtin base (ValueError, OSError, ...) for existing handlers."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _exception_classes(package: str) -> dict[str, list[str]]:
    """Classes named ...Error / ...Failure in the package's source, with their base names."""
    found = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Failure")):
                found[f"{path.relative_to(ROOT)}:{node.name}"] = [ast.unparse(b).split(".")[-1] for b in node.bases]
    return found


@pytest.mark.parametrize("package, root", [("m2hmx", "M2HMXError"), ("mapping", "MappingError")])
def test_every_exception_of_a_package_derives_from_its_root(package, root):
    classes = _exception_classes(package)
    rooted = {root}
    while True:  # a subclass of a rooted class is rooted too
        more = {key.split(":")[1] for key, bases in classes.items() if rooted & set(bases)} - rooted
        if not more:
            break
        rooted |= more
    loose = [key for key in classes if key.split(":")[1] not in rooted and key.split(":")[1] != root]
    assert len(classes) >= 5 and not loose, loose


def test_the_roots_catch_and_the_builtin_bases_still_do():
    from m2hmx import M2HMXError
    from m2hmx.config import ConfigError
    from mapping import MappingError
    from mapping.atomic import ExportError
    from mapping.interface import InterfaceError

    assert issubclass(ConfigError, (M2HMXError, ValueError)) and issubclass(ConfigError, ValueError)
    assert issubclass(InterfaceError, MappingError) and issubclass(InterfaceError, ValueError)
    error = ExportError(28, "No space left on device", "mesh.ply")
    assert isinstance(error, MappingError) and isinstance(error, OSError) and error.errno == 28
