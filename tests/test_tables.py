"""Generated README tables: the committed READMEs agree with their results; a changed result
makes its block stale and ``lowrank-jax tables`` fixes it; the marker syntax is strict."""

import re
import shutil
from pathlib import Path

import pytest

from lowrank_jax import cli
from lowrank_jax.tables import Stale, TablesError, blocks, replace_blocks, update

ROOT = Path(__file__).resolve().parents[1]
LISTOPS = Path("experiments/listops")


def test_committed_readmes_agree_with_their_results():
    stale = update(ROOT, check=True)
    assert stale == [], "run `make tables`:\n" + "\n".join(map(str, stale))


def test_every_readme_with_tables_has_blocks():
    """Each tables.py fills at least one block (update() also rejects unused generators)."""
    for tables in [*ROOT.glob("experiments/*/tables.py"), ROOT / "benchmarks/tables.py"]:
        assert blocks((tables.parent / "README.md").read_text(), str(tables)), tables


@pytest.fixture
def listops_copy(tmp_path):
    """A root holding only experiments/listops, copied."""
    shutil.copytree(ROOT / LISTOPS, tmp_path / LISTOPS)
    return tmp_path


def test_a_changed_result_makes_its_block_stale_and_writing_fixes_it(listops_copy, capsys):
    root = listops_copy
    readme, results = root / LISTOPS / "README.md", root / LISTOPS / "results" / "results.csv"
    assert update(root, check=True) == []
    # the softmax, dense-FFN run's eval accuracy: 157/496 -> 163/496 (0.317 -> 0.329)
    text = results.read_text()
    assert text.count(",0.3165322580645161,0.3165322580645161,") == 1
    results.write_text(
        text.replace(
            ",0.3165322580645161,0.3165322580645161,", ",0.3286290322580645,0.3286290322580645,"
        )
    )
    before = readme.read_text()
    assert "| 36.37 | 0.317 |" in before and "0.329" not in before

    stale = update(root, check=True)
    assert stale == [Stale(LISTOPS / "README.md", "side_by_side")]
    assert readme.read_text() == before  # check mode changes nothing
    assert cli.main(["tables", "--check", "--root", str(root)]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out == [f"{LISTOPS}/README.md: block generated:side_by_side differs from its results"]

    assert cli.main(["tables", "--root", str(root)]) == 0
    after = readme.read_text()
    assert "| 36.37 | 0.329 |" in after and "| 36.37 | 0.317 |" not in after
    assert update(root, check=True) == [] and update(root) == []  # idempotent
    # only the block changed
    assert after.split("<!-- generated:")[0] == before.split("<!-- generated:")[0]
    assert (
        after.split("<!-- /generated:side_by_side -->")[1]
        == before.split("<!-- /generated:side_by_side -->")[1]
    )


def test_a_broken_generator_names_its_block(listops_copy):
    (listops_copy / LISTOPS / "results" / "results.csv").unlink()
    with pytest.raises(FileNotFoundError) as error:
        update(listops_copy, check=True)
    assert any("side_by_side" in note for note in error.value.__notes__)


def _render(name: str) -> str:
    return {"a": "| x |\n|---|\n| 1 |", "b": "two"}[name]


def test_replace_blocks_replaces_only_between_markers_and_is_idempotent():
    text = "intro\n<!-- generated:a -->\nstale\nlines\n<!-- /generated:a -->\nmiddle\n"
    text += "<!-- generated:b -->\n<!-- /generated:b -->\nend"
    once = replace_blocks(text, _render)
    assert once == (
        "intro\n<!-- generated:a -->\n\n| x |\n|---|\n| 1 |\n\n<!-- /generated:a -->\nmiddle\n"
        "<!-- generated:b -->\n\ntwo\n\n<!-- /generated:b -->\nend"
    )
    assert replace_blocks(once, _render) == once
    assert replace_blocks("no blocks\n", _render) == "no blocks\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("x\n<!-- generated:a -->\nrest\n", "doc.md:2: generated:a has no closing line"),
        ("<!-- /generated:a -->\n", "doc.md:1: /generated:a closes no open block"),
        ("<!-- generated:a -->\n<!-- /generated:b -->\n", "closes generated:a (line 1)"),
        ("<!-- generated:a -->\n<!-- generated:b -->\n", "generated:b opens inside generated:a"),
        (
            "<!-- generated:a -->\n<!-- /generated:a -->\n<!-- generated:a -->\n"
            "<!-- /generated:a -->\n",
            "doc.md:3: generated:a appears twice",
        ),
        ("<!-- generated:a-->\n", "doc.md:1: malformed marker"),
        ("<!-- generated:a --> and text\n", "malformed marker"),
    ],
)
def test_malformed_markers_are_clear_errors(text, message):
    with pytest.raises(TablesError, match=re.escape(message)):
        replace_blocks(text, _render, source="doc.md")


def test_a_marker_quoted_inside_a_line_is_not_a_block():
    text = "The syntax is `<!-- generated:NAME -->` on a line of its own.\n"
    assert blocks(text) == [] and replace_blocks(text, _render) == text


def _folder(root: Path, readme: str, tables: str | None) -> Path:
    folder = root / "experiments" / "demo"
    folder.mkdir(parents=True)
    (folder / "README.md").write_text(readme)
    if tables is not None:
        (folder / "tables.py").write_text(tables)
    return folder


def test_unknown_block_unused_generator_and_missing_tables_py(tmp_path):
    block = "<!-- generated:a -->\n<!-- /generated:a -->\n"
    _folder(tmp_path / "missing", block, None)
    with pytest.raises(TablesError, match=r"experiments/demo/tables.py is missing"):
        update(tmp_path / "missing")
    _folder(tmp_path / "unknown", block, "TABLES = {'b': lambda folder: 'x'}\n")
    with pytest.raises(TablesError, match=r"no generator for block\(s\) a .*\(it has: b\)"):
        update(tmp_path / "unknown")
    tables = "TABLES = {'a': lambda folder: folder.name, 'b': lambda folder: 'x'}\n"
    _folder(tmp_path / "unused", block, tables)
    with pytest.raises(TablesError, match=r"TABLES names b, which .* has no block"):
        update(tmp_path / "unused")
    assert cli.main(["tables", "--root", str(tmp_path / "unused")]) == 2


def test_write_mode_reports_the_files_it_changed(tmp_path):
    tables = "TABLES = {'a': lambda folder: folder.name}\n"
    folder = _folder(tmp_path, "# t\n<!-- generated:a -->\n<!-- /generated:a -->\n", tables)
    assert update(tmp_path, check=True) == [Stale(Path("experiments/demo/README.md"), "a")]
    assert update(tmp_path) == [folder / "README.md"]
    assert (folder / "README.md").read_text() == (
        "# t\n<!-- generated:a -->\n\ndemo\n\n<!-- /generated:a -->\n"
    )
    assert update(tmp_path) == []
