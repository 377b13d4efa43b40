"""Every ```python block of README.md and docs/*.md runs as pasted.

One fresh Python process per file runs that file's blocks in order, in one namespace, with
the current directory a temporary folder and ``TFP_FLOWS_DOCS_SMALL=1`` set (a page may read it
to shrink sizes). Blocks in other languages (```bash, ```text, plain ```) are not run.
The README is also held to its limits: at most 200 lines, the exact test command that CI runs
(``.ci/run``), and no link to a design document outside the repository.
"""

import concurrent.futures
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOC_FILES = [README] + sorted((ROOT / "docs").glob("*.md"))
TEST_COMMAND = ('python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[test]" '
                "&& python -m pytest")
# Pages whose blocks take longer than the default suite allows (name -> reason); they run
# with -m slow.
# Every page costs a fresh process (~7 CPU-s importing TensorFlow) plus its blocks; the default
# suite runs the README and docs/coupling.md, the rest run with -m slow.
SLOW_PAGES = {
    "docs/models.md": "trains a VAE prior, a VI posterior and a distilled IAF (~30 s)",
    "docs/keras.md": "fits, saves, reloads and distributes FlowModels (~25 s)",
    "docs/planar.md": "trains planar VI and an amortised VAE step (~25 s)",
    "docs/conventions.md": "~13 s", "docs/images.md": "~13 s",
    "docs/gaussianization.md": "~13 s", "docs/numerics.md": "~11 s",
    "docs/conditioning.md": "~12 s", "docs/autoregressive.md": "~12 s",
    "docs/splines.md": "~12 s",
}
TIMEOUT_S = 600
# Pages run this many at a time (each in its own process).
WORKERS = int(os.environ.get("TFP_FLOWS_DOCS_WORKERS", min(2, os.cpu_count() or 1)))

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")


def python_blocks(text):
  """[(line number of the opening fence, source)] of the ```python blocks of Markdown text."""
  blocks, lines, i = [], text.splitlines(), 0
  while i < len(lines):
    m = _FENCE.match(lines[i])
    if not m:
      i += 1
      continue
    fence, info, indent = m.group("fence"), m.group("info").strip(), len(m.group("indent"))
    start, body, i = i + 1, [], i + 1
    while i < len(lines) and not (lines[i].strip().startswith(fence)
                                  and lines[i].strip().strip(fence[0]) == ""):
      body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
      i += 1
    i += 1
    if info.split()[:1] in (["python"], ["py"]):
      blocks.append((start, "\n".join(body) + "\n"))
  return blocks


def _script(blocks):
  """(program, [first program line of each block]): the blocks in order, one namespace.

  The program is written to a file (not run with ``-c``) so that ``inspect`` and AutoGraph
  find the source of functions defined in the blocks.
  """
  parts, starts, line = ["import sys as _docs_sys\n"], [], 2
  for n, (fence_line, source) in enumerate(blocks, 1):
    parts.append(f"_docs_sys.stderr.write('[docs] block {n} (line {fence_line})\\n')\n")
    line += 1
    starts.append(line)
    parts.append(source)
    line += source.count("\n")
  return "".join(parts), starts


def _params():
  out = []
  for path in DOC_FILES:
    name = str(path.relative_to(ROOT))
    marks = [pytest.mark.slow] if name in SLOW_PAGES else []
    out.append(pytest.param(path, id=name, marks=marks))
  return out


def test_python_blocks_are_found():
  blocks = python_blocks("text\n```python\na = 1\n```\n```bash\nls\n```\n  ```python\n  b = 2\n"
                         "  ```\n````python\nc = '```'\n````\n")
  assert [src for _, src in blocks] == ["a = 1\n", "b = 2\n", "c = '```'\n"]
  assert [line for line, _ in blocks] == [2, 8, 11]


def _run_page(path, folder):
  """Runs the page's python blocks in one fresh process; (blocks, starts, script, process)."""
  blocks = python_blocks(path.read_text())
  if not blocks:
    return blocks, [], None, None
  env = dict(os.environ, TFP_FLOWS_DOCS_SMALL="1", TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg",
             PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get(
                 "PYTHONPATH")] if p]))
  program, starts = _script(blocks)
  script = folder / "docs_blocks.py"
  script.write_text(program)
  try:
    proc = subprocess.run([sys.executable, str(script)], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)
  except subprocess.TimeoutExpired:
    proc = None
  return blocks, starts, script, proc


@pytest.fixture(scope="module")
def page_runs(request, tmp_path_factory):
  """Runs the selected pages ``WORKERS`` at a time, ahead of their tests (plain pytest runs).

  Under pytest-xdist every worker collects every page, so there each page starts only when its
  own test asks for it.
  """
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=WORKERS)
  futures = {}

  def submit(path):
    if path not in futures:
      futures[path] = pool.submit(_run_page, path, tmp_path_factory.mktemp(path.stem))
    return futures[path]

  if not os.environ.get("PYTEST_XDIST_WORKER"):
    module = sys.modules[__name__]
    for item in request.session.items:
      if getattr(item, "module", None) is module and item.originalname == "test_python_blocks_run":
        submit(item.callspec.params["path"])
  yield submit
  pool.shutdown(wait=False, cancel_futures=True)


_NOISE = re.compile(r"^(WARNING: All log messages before absl::InitializeLog|[IWE]\d{4} )")


@pytest.mark.parametrize("path", _params())
def test_python_blocks_run(path, page_runs):
  blocks, starts, script, proc = page_runs(path).result()
  if not blocks:
    pytest.skip(f"{path.name} has no python blocks")
  if proc is None:
    pytest.fail(f"{path.name}: its python blocks did not finish within {TIMEOUT_S} s")
  if proc.returncode == 0:
    return
  lines = [int(n) for n in re.findall(rf'File "{re.escape(str(script))}", line (\d+)',
                                      proc.stderr)]
  started = re.findall(r"^\[docs\] block (\d+) ", proc.stderr, re.M)
  if lines:  # the innermost frame in the program (a syntax error too)
    number = sum(1 for s in starts if s <= lines[-1])
  else:
    number = int(started[-1]) if started else 0
  fence = blocks[number - 1][0] if number else 0
  head = "\n".join(blocks[number - 1][1].splitlines()[:5]) if number else "(before block 1)"
  stderr = [line for line in proc.stderr.strip().splitlines() if not _NOISE.match(line)]
  tail = "\n".join(stderr[-25:])
  pytest.fail(f"{path.relative_to(ROOT)}: python block {number} of {len(blocks)} (opening "
              f"fence on line {fence}) failed with exit status {proc.returncode}.\n"
              f"--- its first lines:\n{head}\n--- stderr (tail):\n{tail}", pytrace=False)


def test_readme_limits():
  text = README.read_text()
  assert len(text.splitlines()) <= 200, f"README.md has {len(text.splitlines())} lines (max 200)"
  assert TEST_COMMAND in text.splitlines(), "README.md lacks the exact test command"
  ci = (ROOT / ".ci" / "run").read_text()
  assert TEST_COMMAND in ci.splitlines(), ".ci/run no longer runs the README's test command"


@pytest.mark.parametrize("path", DOC_FILES + [ROOT / "benchmarks" / "README.md"],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_link_to_design_notes(path):
  assert "DESIGN.md" not in path.read_text(), f"{path.name} refers to DESIGN.md"
