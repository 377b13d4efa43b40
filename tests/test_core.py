"""The ground floor: version bounds that the internals we import were checked against."""

import ast
import pathlib
import re
from importlib import metadata

from tfp_flows import core

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _version_tuple(text):
  return tuple(int(p) for p in re.findall(r"\d+", text)[:2])


def test_installed_versions_are_supported():
  for package, (low, high) in core.SUPPORTED_VERSIONS.items():
    installed = _version_tuple(metadata.version(package))
    assert _version_tuple(low) <= installed < _version_tuple(high), (package, installed)


def test_pyproject_bounds_match_core():
  text = (ROOT / "pyproject.toml").read_text()
  for package, (low, high) in core.SUPPORTED_VERSIONS.items():
    assert f'"{package}>={low},<{high}"' in text, package


def test_internals_are_imported_only_in_core():
  """No module but core.py imports TF/TFP internals (``tensorflow.python``, ``...internal``)."""
  offenders = []
  for path in (ROOT / "tfp_flows").rglob("*.py"):
    if path.name == "core.py":
      continue
    for node in ast.walk(ast.parse(path.read_text())):
      names = []
      if isinstance(node, ast.ImportFrom) and node.module:
        names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
      elif isinstance(node, ast.Import):
        names = [a.name for a in node.names]
      if any(n.startswith("tensorflow.python") or
             n.startswith("tensorflow_probability.python") for n in names):
        offenders.append(str(path.relative_to(ROOT)))
  assert not offenders, offenders
