"""Tables generated from results: every measured number in a README comes from code.

A README marks each generated block with two lines of its own::

    <!-- generated:NAME -->
    ...replaced by the generator's output...
    <!-- /generated:NAME -->

and the ``tables.py`` beside it (for the top-level README.md: ``experiments/tables.py``)
defines ``TABLES: dict[str, Callable[[Path], str]]``: block name -> a function of
that ``tables.py``'s folder returning the block's Markdown, read from the committed
results files (``results/*.json``, ``*.csv``, ``*.md``; a paper's published numbers
in ``paper.json``). Experiment-specific code stays in the experiment's folder; this
module only finds the blocks, runs the generators and replaces or checks them.

    lowrank-jax tables            # rewrite every block; prints the files that changed
    lowrank-jax tables --check    # change nothing; one line per stale block, exit 1

Example:
  >>> text = "a\\n<!-- generated:n -->\\nold\\n<!-- /generated:n -->\\nb\\n"
  >>> print(replace_blocks(text, {"n": "| x |\\n|---|\\n| 1 |"}.__getitem__), end="")
  a
  <!-- generated:n -->
  <BLANKLINE>
  | x |
  |---|
  | 1 |
  <BLANKLINE>
  <!-- /generated:n -->
  b
"""

from __future__ import annotations

import csv
import math
import re
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lowrank_jax.config import load_module

# The Markdown files that may hold generated blocks, relative to the root.
MARKDOWN = ("README.md", "benchmarks/README.md", "experiments/*/README.md")
# Where a Markdown file's generators live, where it is not the tables.py beside it.
GENERATORS = {"README.md": "experiments/tables.py"}

_OPEN = re.compile(r"^<!-- generated:([\w.-]+) -->$")
_CLOSE = re.compile(r"^<!-- /generated:([\w.-]+) -->$")
_ANY = re.compile(r"^\s*<!--\s*/?\s*generated\s*:")


class TablesError(ValueError):
    """A malformed marker, an unknown block name or a missing generator file."""


@dataclass(frozen=True)
class Stale:
    """A block whose text differs from what its generator writes now."""

    path: Path
    name: str

    def __str__(self) -> str:
        return f"{self.path}: block generated:{self.name} differs from its results"


def blocks(text: str, source: str = "<text>") -> list[tuple[str, int, int]]:
    """``(name, first, last)`` line indices of each block's opening and closing marker.

    Raises ``TablesError`` naming ``source`` and the line for a malformed marker line (a
    marker must be alone on its line, spelled exactly), a block opened inside another, a
    name used twice, a closing marker of another name or without an opening one, and a
    block never closed. A marker quoted inside a sentence is text, not a marker.
    """
    found, names, open_at = [], set(), None
    for index, line in enumerate(text.splitlines()):
        where = f"{source}:{index + 1}"
        opening, closing = _OPEN.match(line), _CLOSE.match(line)
        if not (opening or closing):
            if _ANY.match(line):
                raise TablesError(
                    f"{where}: malformed marker {line.strip()!r}: expected "
                    "'<!-- generated:NAME -->' or '<!-- /generated:NAME -->' alone on the line"
                )
            continue
        if opening:
            if open_at is not None:
                raise TablesError(
                    f"{where}: generated:{opening[1]} opens inside generated:{open_at[0]} "
                    f"(line {open_at[1] + 1}), which is not closed"
                )
            if opening[1] in names:
                raise TablesError(f"{where}: generated:{opening[1]} appears twice")
            open_at = (opening[1], index)
            names.add(opening[1])
        elif open_at is None:
            raise TablesError(f"{where}: /generated:{closing[1]} closes no open block")
        elif closing[1] != open_at[0]:
            raise TablesError(
                f"{where}: /generated:{closing[1]} closes generated:{open_at[0]} "
                f"(line {open_at[1] + 1})"
            )
        else:
            found.append((open_at[0], open_at[1], index))
            open_at = None
    if open_at is not None:
        raise TablesError(
            f"{source}:{open_at[1] + 1}: generated:{open_at[0]} has no closing line "
            f"'<!-- /generated:{open_at[0]} -->'"
        )
    return found


def replace_blocks(text: str, render: Callable[[str], str], source: str = "<text>") -> str:
    """``text`` with each block's lines replaced by ``render(name)``, set off by blank lines."""
    lines = text.splitlines(keepends=True)
    for name, first, last in reversed(blocks(text, source)):
        body = render(name).strip("\n")
        lines[first + 1 : last] = ["\n", *(line + "\n" for line in body.split("\n")), "\n"]
    return "".join(lines)


def markdown_files(root: Path) -> list[Path]:
    """The Markdown files under ``root`` (see ``MARKDOWN``) that hold a generated block."""
    paths = sorted({path for pattern in MARKDOWN for path in Path(root).glob(pattern)})
    return [path for path in paths if any(map(_ANY.match, path.read_text().splitlines()))]


def generators(markdown: Path, root: Path) -> tuple[Path, dict[str, Callable[[Path], str]]]:
    """The ``tables.py`` that fills ``markdown``'s blocks, and its ``TABLES``."""
    relative = markdown.relative_to(root).as_posix()
    path = (
        root / GENERATORS[relative] if relative in GENERATORS else markdown.with_name("tables.py")
    )
    if not path.is_file():
        raise TablesError(f"{relative}: has generated blocks but {_rel(path, root)} is missing")
    tables = getattr(load_module(path), "TABLES", None)
    if not isinstance(tables, dict):
        raise TablesError(f"{_rel(path, root)}: defines no TABLES dict (block name -> function)")
    return path, tables


def render_file(markdown: Path, root: Path) -> str:
    """``markdown``'s text with every block generated afresh from its results."""
    text = markdown.read_text()
    source = markdown.relative_to(root).as_posix()
    path, tables = generators(markdown, root)
    names = [name for name, _, _ in blocks(text, source)]
    unknown = sorted(set(names) - set(tables))
    if unknown:
        raise TablesError(
            f"{source}: no generator for block(s) {', '.join(unknown)} in {_rel(path, root)} "
            f"(it has: {', '.join(sorted(tables)) or 'none'})"
        )
    unused = sorted(set(tables) - set(names))
    if unused:
        raise TablesError(
            f"{_rel(path, root)}: TABLES names {', '.join(unused)}, which {source} has no block for"
        )

    def render(name: str) -> str:
        try:
            return tables[name](path.parent)
        except Exception as error:
            error.add_note(f"while generating block {name} of {source} ({_rel(path, root)})")
            raise

    return replace_blocks(text, render, source)


def update(root: str | Path = ".", check: bool = False) -> list[Path] | list[Stale]:
    """Regenerate every block under ``root``.

    Returns the files rewritten, or with ``check=True`` (nothing written) the stale blocks.
    """
    root = Path(root)
    changed, stale = [], []
    for markdown in markdown_files(root):
        text = markdown.read_text()
        fresh = render_file(markdown, root)
        if fresh == text:
            continue
        changed.append(markdown)
        if check:
            now = _bodies(text)
            relative = markdown.relative_to(root)
            stale += [
                Stale(relative, name)
                for name, body in _bodies(fresh).items()
                if now.get(name) != body
            ]
        else:
            markdown.write_text(fresh)
    return stale if check else changed


def _bodies(text: str) -> dict[str, str]:
    lines = text.splitlines()
    return {name: "\n".join(lines[first + 1 : last]) for name, first, last in blocks(text)}


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


# Helpers for the generators: Markdown tables and the formats the READMEs share.


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> str:
    """A Markdown table; ``align`` holds one letter per column, ``l`` (default) or ``r``.

    Example:
      >>> print(markdown_table(["model", "acc."], [["dense", "0.317"]], "lr"))
      | model | acc. |
      |---|---:|
      | dense | 0.317 |
    """
    align = align.ljust(len(header), "l")
    rule = "|" + "".join("---:|" if a == "r" else "---|" for a in align[: len(header)])
    lines = ["| " + " | ".join(header) + " |", rule]
    for row in rows:
        if len(row) != len(header):
            raise TablesError(f"row {list(row)} has {len(row)} cells, the header {len(header)}")
        lines.append("| " + " | ".join(str(cell) for cell in row) + " |")
    return "\n".join(lines)


def prose(text: str, width: int = 78) -> str:
    """``text`` wrapped as the READMEs wrap their paragraphs (never inside a word or path)."""
    return textwrap.fill(text, width, break_long_words=False, break_on_hyphens=False)


def signed(value: float, digits: int = 3) -> str:
    """``+0.014`` / ``−0.061`` (a real minus sign), as the gap columns print.

    >>> signed(0.0141), signed(-0.0606), signed(0.0)
    ('+0.014', '−0.061', '+0.000')
    """
    text = f"{value:+.{digits}f}"
    return "+" + text[1:] if float(text) == 0 else text.replace("-", "−")


def span(values: Iterable[float], spec: str = ".2f", sep: str = "–") -> str:
    """``min–max`` of ``values`` in ``spec``, one number where both print the same.

    >>> span([0.47, 0.78, 0.34]), span([0.5, 0.5001])
    ('0.34–0.78', '0.50')
    """
    values = list(values)
    low, high = format(min(values), spec), format(max(values), spec)
    return low if low == high else f"{low}{sep}{high}"


def count_of(fractions: Iterable[float], limit: int = 100_000) -> int:
    """The smallest n for which every fraction × n is a whole number: the examples counted.

    >>> count_of([151 / 496, 157 / 496, 0.0])
    496
    """
    fractions = list(fractions)
    for n in range(1, limit + 1):
        if all(abs(f * n - round(f * n)) < 1e-6 * n for f in fractions):
            return n
    raise TablesError(f"no count up to {limit} makes {fractions} whole numbers")


def stderr(p: float, n: int) -> float:
    """The binomial standard error of an accuracy ``p`` over ``n`` examples."""
    return math.sqrt(p * (1 - p) / n)


def counts_note(runs: list[dict[str, str]], examples: str, source: str) -> str:
    """How many test / training examples the runs' accuracies count, and the sampling error.

    ``runs`` are rows of a report's results.csv (``eval_accuracy``, ``train_accuracy``);
    the counts are the smallest that make every accuracy in ``source`` a whole number.
    """
    evals = [float(r["eval_accuracy"]) for r in runs]
    n_eval, n_train = count_of(evals), count_of(float(r["train_accuracy"]) for r in runs)
    error = stderr(sum(evals) / len(evals), n_eval)
    return prose(
        f"Each accuracy is a count out of {n_eval} test {examples} (eval) or {n_train} "
        f"training {examples} (train): the smallest counts that make every accuracy in "
        f"`{source}` a whole number. Sampling error (binomial, at the mean eval accuracy): "
        f"±{error:.3f}."
    )


# The 1-minute load average before a timing under which nothing else is taken to run.
QUIET_LOAD = 0.5


def load_note(load: dict | None) -> str:
    """What a timing's results file recorded of the machine's load, and what it says.

    ``load``: ``{"before": os.getloadavg(), "after": ...}`` around the measurements (the
    one after includes their own work); files older than that record have none.

    >>> load_note({"before": [0.12, 0.3, 0.2], "after": [1.96, 0.9, 0.4]})[-59:]
    '0.20 before, 1.96 / 0.90 / 0.40 after: nothing else running'
    >>> load_note({"before": [2.5, 2.0, 1.0], "after": [2.5, 2.1, 1.1]})[-45:]
    'other work running (1-minute load 2.50 ≥ 0.5)'
    >>> load_note(None)
    'load not recorded'
    """
    if not load:
        return "load not recorded"

    def three(values):
        return " / ".join(f"{v:.2f}" for v in values)

    before = load["before"][0]
    verdict = (
        "nothing else running"
        if before < QUIET_LOAD
        else f"other work running (1-minute load {before:.2f} ≥ {QUIET_LOAD})"
    )
    return (
        f"load average (1 / 5 / 15 min) {three(load['before'])} before, "
        f"{three(load['after'])} after: {verdict}"
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header line, as dicts of strings."""
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def markdown_rows(path: Path, first_cell: str) -> list[list[str]]:
    """The body rows (cells as strings) of the table in ``path`` whose header starts so."""
    rows, inside = [], False
    for line in Path(path).read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell and not inside:
            inside = True
        elif inside and line.startswith("|"):
            if not set(line) <= set("|-: "):
                rows.append(cells)
        elif inside:
            break
    if not inside:
        raise TablesError(f"{path}: no table whose first column is {first_cell!r}")
    return rows
