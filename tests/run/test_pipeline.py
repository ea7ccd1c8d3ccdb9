import json

import nbformat
import pytest

from clrepro.run import pipeline


def make_notebook(path, code):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('profile = "smoke"\ndevice = "cpu"\noutput_root = None\nn_seeds = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(code)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


def test_input_hash_ignores_outputs_and_injected_parameters(tmp_path):
    path = tmp_path / "a.ipynb"
    make_notebook(path, "x = 1")
    before = pipeline.input_hash(path, {"profile": "paper"})
    nb = nbformat.read(path, as_version=4)
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", text="hello")]
    injected = nbformat.v4.new_code_cell('profile = "paper"')
    injected.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(1, injected)
    nbformat.write(nb, path)
    assert pipeline.input_hash(path, {"profile": "paper"}) == before
    assert pipeline.input_hash(path, {"profile": "smoke"}) != before
    nb.cells[2].source = "x = 2"
    nbformat.write(nb, path)
    assert pipeline.input_hash(path, {"profile": "paper"}) != before


def test_readme_table_is_spliced_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# T\n{pipeline.README_START}\nold\n{pipeline.README_END}\nrest\n")
    pipeline.update_readme("| a |", readme)
    assert readme.read_text() == f"# T\n{pipeline.README_START}\n| a |\n{pipeline.README_END}\nrest\n"


WRITE_RESULT = """
from pathlib import Path
Path(output_root, "results", "good.csv").write_text("fresh")
"""


def test_failed_notebook_leaves_outputs_and_successful_one_is_skipped_next_time(tmp_path, monkeypatch):
    pytest.importorskip("papermill")
    nbdir, out = tmp_path / "notebooks", tmp_path / "out"
    nbdir.mkdir()
    make_notebook(nbdir / "good.ipynb", WRITE_RESULT)
    make_notebook(nbdir / "bad.ipynb", "raise RuntimeError('boom')")
    (out / "results").mkdir(parents=True)
    (out / "results" / "bad.csv").write_text("committed")
    monkeypatch.setattr(pipeline, "NOTEBOOKS_DIR", nbdir)
    monkeypatch.setenv("CLREPRO_OUTPUT", str(out))

    assert pipeline.reproduce("smoke", "cpu") == 1
    assert (out / "results" / "bad.csv").read_text() == "committed"
    assert (out / "results" / "good.csv").read_text() == "fresh"
    assert (out / "notebooks" / "good.ipynb").exists() and not (out / "notebooks" / "bad.ipynb").exists()
    stamps = json.loads((out / "results" / ".stamps.json").read_text())
    assert set(stamps) == {"good"}

    (out / "results" / "good.csv").write_text("kept")
    make_notebook(nbdir / "bad.ipynb", "pass")
    assert pipeline.reproduce("smoke", "cpu") == 0
    assert (out / "results" / "good.csv").read_text() == "kept"  # skipped: unchanged


def test_prose_update_copies_markdown_only_when_code_cells_match(tmp_path):
    import nbformat

    def notebook(path, prose, code, output=None):
        nb = nbformat.v4.new_notebook()
        cell = nbformat.v4.new_code_cell(code)
        if output is not None:
            cell.outputs = [nbformat.v4.new_output("stream", text=output)]
        nb.cells = [nbformat.v4.new_markdown_cell(prose), cell]
        nbformat.write(nb, path)

    rendered, edited, changed = tmp_path / "r.ipynb", tmp_path / "e.ipynb", tmp_path / "c.ipynb"
    notebook(rendered, "old prose", "print(1)", output="1\n")
    notebook(edited, "new prose", "print(1)")
    notebook(changed, "newer prose", "print(2)")

    assert pipeline.update_prose(edited, rendered)
    nb = nbformat.read(rendered, as_version=4)
    assert nb.cells[0].source == "new prose" and nb.cells[1].outputs[0].text == "1\n"
    assert not pipeline.update_prose(changed, rendered)
    assert nbformat.read(rendered, as_version=4).cells[0].source == "new prose"


def test_markdown_only_edit_is_not_re_executed(tmp_path, monkeypatch):
    pytest.importorskip("papermill")
    import nbformat

    nbdir, out = tmp_path / "notebooks", tmp_path / "out"
    nbdir.mkdir()
    make_notebook(nbdir / "good.ipynb", WRITE_RESULT)
    nb = nbformat.read(nbdir / "good.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_markdown_cell("A draft discussion."))
    nbformat.write(nb, nbdir / "good.ipynb")
    monkeypatch.setattr(pipeline, "NOTEBOOKS_DIR", nbdir)
    monkeypatch.setenv("CLREPRO_OUTPUT", str(out))
    assert pipeline.reproduce("smoke", "cpu") == 0
    (out / "results" / "good.csv").write_text("kept")

    nb.cells[-1].source = "A new discussion."
    nbformat.write(nb, nbdir / "good.ipynb")
    assert pipeline.reproduce("smoke", "cpu") == 0
    assert (out / "results" / "good.csv").read_text() == "kept"  # not executed again
    rendered = nbformat.read(out / "notebooks" / "good.ipynb", as_version=4)
    assert rendered.cells[-1].source == "A new discussion."
