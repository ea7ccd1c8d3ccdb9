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


# ---------------------------------------------------------------------------------------------
# Concurrent renders lose nothing

import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

RENDER = """
import sys
from pathlib import Path
from clrepro.run import pipeline
pipeline.NOTEBOOKS_DIR = Path(sys.argv[1])
sys.exit(pipeline.main(["reproduce", "--profile", "smoke", "--device", "cpu", *sys.argv[2:]]))
"""

SLOW_ROWS = """
import time
from pathlib import Path
time.sleep({sleep})
results = Path(output_root, "results")
(results / "{name}.csv").write_text("".join(f"{{i}},{{i * i}}\\n" for i in range({rows})))
(results / ".{name}.csv.half-written.tmp").write_text("partial")  # must never be moved into place
"""


def _render(nbdir: Path, out: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "CLREPRO_OUTPUT": str(out), "PYTHONWARNINGS": "ignore::DeprecationWarning"}
    return subprocess.Popen([sys.executable, "-c", RENDER, str(nbdir), *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_two_renders_of_one_notebook_lose_nothing(tmp_path):
    pytest.importorskip("papermill")
    nbdir, out = tmp_path / "notebooks", tmp_path / "out"
    nbdir.mkdir()
    make_notebook(nbdir / "slow.ipynb", SLOW_ROWS.format(sleep=3, name="slow", rows=930))
    first = _render(nbdir, out, "--only", "slow", "--force")
    time.sleep(1.0)
    second = _render(nbdir, out, "--only", "slow", "--force")
    logs = [p.communicate(timeout=120)[0] for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], logs
    assert "[wait] slow" in logs[1]  # the second waited for the first, and said so
    assert len((out / "results" / "slow.csv").read_text().splitlines()) == 930
    assert not [p.name for p in (out / "results").iterdir() if p.name.endswith(".tmp")]
    assert set(json.loads((out / "results" / ".stamps.json").read_text())) == {"slow"}


def test_renders_of_different_notebooks_run_side_by_side_and_keep_both_stamps(tmp_path):
    pytest.importorskip("papermill")
    nbdir, out = tmp_path / "notebooks", tmp_path / "out"
    nbdir.mkdir()
    make_notebook(nbdir / "a.ipynb", SLOW_ROWS.format(sleep=3, name="a", rows=10))
    make_notebook(nbdir / "b.ipynb", SLOW_ROWS.format(sleep=0, name="b", rows=20))
    first, second = _render(nbdir, out, "--only", "a"), _render(nbdir, out, "--only", "b")
    logs = [p.communicate(timeout=120)[0] for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], logs
    assert not any("[wait]" in log for log in logs)
    assert set(json.loads((out / "results" / ".stamps.json").read_text())) == {"a", "b"}


def test_a_busy_notebook_is_refused_after_the_wait(tmp_path, monkeypatch, capsys):
    nbdir, out = tmp_path / "notebooks", tmp_path / "out"
    nbdir.mkdir()
    make_notebook(nbdir / "good.ipynb", WRITE_RESULT)
    monkeypatch.setattr(pipeline, "NOTEBOOKS_DIR", nbdir)
    monkeypatch.setenv("CLREPRO_OUTPUT", str(out))
    lock = out / "results" / ".locks" / "render-good.lock"
    with pipeline.file_lock(lock):  # another render holds it
        assert pipeline.reproduce("smoke", "cpu", wait=0.2) == 1
    assert "[busy]" in capsys.readouterr().err and not (out / "results" / "good.csv").exists()


STAMP_WRITER = """
import sys
from pathlib import Path
from clrepro.run import pipeline
path, name = Path(sys.argv[1]), sys.argv[2]
for i in range(80):
    pipeline._update_stamp(path, name, {"inputs": str(i), "filler": "x" * 2000})
    stamps = pipeline._load_stamps(path)
    assert stamps[name]["inputs"] == str(i), stamps.get(name)
"""


def test_two_stamp_writers_never_lose_or_corrupt_a_stamp(tmp_path):
    path = tmp_path / "results" / ".stamps.json"
    path.parent.mkdir()
    writers = [subprocess.Popen([sys.executable, "-W", "error", "-c", STAMP_WRITER, str(path), name],
                                stderr=subprocess.PIPE, text=True) for name in ("a", "b")]
    errors = [w.communicate(timeout=120)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    stamps = json.loads(path.read_text())
    assert {k: v["inputs"] for k, v in stamps.items()} == {"a": "79", "b": "79"}
    assert not [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_a_damaged_stamps_file_is_named_and_treated_as_no_stamps(tmp_path):
    path = tmp_path / ".stamps.json"
    path.write_text('{"ewc": {"inputs": "ab')
    with pytest.warns(UserWarning, match=r"\.stamps\.json is damaged"):
        assert pipeline._load_stamps(path) == {}
    with pytest.warns(UserWarning, match="damaged"):
        pipeline._update_stamp(path, "lwf", {"inputs": "1"})  # and it is repaired by the next stamp
    assert json.loads(path.read_text()) == {"lwf": {"inputs": "1"}}


# ---------------------------------------------------------------------------------------------
# Bad arguments: one line naming the parameter, before any notebook runs


@pytest.mark.parametrize("argv, message", [
    (["reproduce", "--only"], "error: --only: expected at least one argument"),
    (["reproduce", "--n-seeds", "0"], "error: --n-seeds: must be an integer >= 1, got 0"),
    (["reproduce", "--n-seeds", "two"], "error: --n-seeds: must be an integer >= 1, got 'two'"),
    (["reproduce", "--device", "mps", "--profile", "smoke"], "error: device: 'mps' is not available"),
    (["reproduce", "--only", "nope", "--profile", "smoke"], "error: --only: unknown notebook(s) ['nope']"),
    (["reproduce", "--profile", "fast"], "error: --profile: invalid choice: 'fast'"),
])
def test_cli_errors_are_one_line_naming_the_parameter(argv, message, capsys):
    try:
        status = pipeline.main(argv)
    except SystemExit as exit_:  # argparse's own checks
        status = exit_.code
    err = capsys.readouterr().err
    assert status == 2 and err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err, err


def test_a_paper_render_from_a_dirty_tree_is_refused_unless_allowed(tmp_path, monkeypatch):
    nbdir, out = tmp_path / "notebooks", tmp_path / "out"
    nbdir.mkdir()
    make_notebook(nbdir / "good.ipynb", WRITE_RESULT)
    monkeypatch.setattr(pipeline, "NOTEBOOKS_DIR", nbdir)
    monkeypatch.setenv("CLREPRO_OUTPUT", str(out))
    monkeypatch.setattr(pipeline, "git_state", lambda: ("abc123", False))
    monkeypatch.setattr(pipeline, "update_durations", lambda: True)  # not the real README
    with pytest.raises(pipeline.ConfigError, match="--allow-dirty"):
        pipeline.reproduce("paper", "cpu")
    assert not (out / "results" / "good.csv").exists()
    assert pipeline.reproduce("paper", "cpu", allow_dirty=True) == 0
    stamp = json.loads((out / "results" / ".stamps.json").read_text())["good"]
    assert stamp["commit"] == "abc123" and stamp["clean"] is False
    assert stamp["parameters"] == {"profile": "paper", "device": "cpu"}


def test_render_status_says_which_renders_are_current(tmp_path, monkeypatch):
    nbdir, out = tmp_path / "notebooks", tmp_path / "out"
    nbdir.mkdir()
    for name in ("fresh", "edited", "never"):
        make_notebook(nbdir / f"{name}.ipynb", WRITE_RESULT)
    monkeypatch.setattr(pipeline, "NOTEBOOKS_DIR", nbdir)
    monkeypatch.setenv("CLREPRO_OUTPUT", str(out))
    monkeypatch.setattr(pipeline, "git_state", lambda: ("abc123", True))
    assert pipeline.reproduce("smoke", "cpu", only=["fresh", "edited"]) == 0
    make_notebook(nbdir / "edited.ipynb", WRITE_RESULT + "\nprint('changed')")
    status = pipeline.render_status("smoke").set_index("notebook")
    assert status.loc["fresh", "current"] and status.loc["fresh", "commit"] == "abc123"
    assert not status.loc["edited", "current"] and "code cells" in status.loc["edited", "reason"]
    assert not status.loc["never", "current"] and "never rendered" in status.loc["never", "reason"]
    assert pipeline.main(["check-renders", "--profile", "smoke"]) == 1


def test_durations_table_comes_from_the_stamps(tmp_path, monkeypatch):
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    for name in ("a", "b", "summary"):
        make_notebook(nbdir / f"{name}.ipynb", "pass")
    monkeypatch.setattr(pipeline, "NOTEBOOKS_DIR", nbdir)
    (tmp_path / "a.csv").write_text("experiment,method,benchmark,params,seed,scenario,kind,seconds\n"
                                    "a/x,sgd,pm,{},0,domain,R,1800\na/x,sgd,pm,{},0,domain,initial,1800\n"
                                    "a/x,sgd,pm,{},1,domain,R,5400\n")
    table = pipeline.durations_markdown({"a": {"minutes": 30.0, "finished": "T1"}, "summary": {"minutes": 0.5}},
                                        results_dir=tmp_path)
    assert "| a | 30.0 | 2.0 | T1 | not recorded |" in table and "| b | – | – | not rendered | |" in table
    assert "**30.5** (0.5 h) | **2.0**" in table


def test_outputs_are_compared_only_against_a_current_render(tmp_path, monkeypatch, capsys):
    import pandas as pd

    pytest.importorskip("papermill")
    nbdir = tmp_path / "notebooks"
    nbdir.mkdir()
    for name in ("fresh", "stale"):
        make_notebook(nbdir / f"{name}.ipynb", f"{pipeline.CHECK_OUTPUT}\nprint(1)")
    monkeypatch.setattr(pipeline, "NOTEBOOKS_DIR", nbdir)
    monkeypatch.setattr(pipeline, "render_status", lambda profile="paper": pd.DataFrame(
        {"notebook": ["fresh", "stale"], "current": [True, False], "reason": ["", "the package code changed"]}))
    pipeline.prepare_tests(tmp_path / "nbtest")
    sources = {name: nbformat.read(tmp_path / "nbtest" / f"{name}.ipynb", as_version=4).cells[-1].source
               for name in ("fresh", "stale")}
    assert pipeline.CHECK_OUTPUT in sources["fresh"]
    assert pipeline.CHECK_OUTPUT not in sources["stale"] and "print(1)" in sources["stale"]
    assert "[stale] stale" in capsys.readouterr().err


def test_the_summary_fingerprint_ignores_what_the_summary_writes(tmp_path):
    (tmp_path / "ewc.csv").write_text("a\n1\n")
    before = pipeline._results_fingerprint(tmp_path)
    for name in pipeline.SUMMARY_OUTPUTS:
        (tmp_path / name).write_text("written by the summary\n")
    assert pipeline._results_fingerprint(tmp_path) == before
    (tmp_path / "ewc.csv").write_text("a\n2\n")
    assert pipeline._results_fingerprint(tmp_path) != before


def test_run_cpu_hours_counts_each_run_once_and_prefers_cpu_seconds(tmp_path):
    import pandas as pd

    base = {"method": "der", "benchmark": "split_mnist", "params": "{}", "seed": 0}
    rows = pd.DataFrame([
        # one Class-IL run: two rows of its own view, and its Task-IL view stored under another name
        {**base, "experiment": "x/cil", "scenario": "class", "trained_as": "class", "seconds": 100.0,
         "run_cpu_seconds": 60.0},
        {**base, "experiment": "x/cil", "scenario": "class", "trained_as": "class", "seconds": 100.0,
         "run_cpu_seconds": 60.0},
        {**base, "experiment": "x/til", "scenario": "task", "trained_as": "class", "seconds": 100.0,
         "run_cpu_seconds": 60.0},
        # a run from before CPU seconds were recorded: its wall seconds count
        {**base, "experiment": "x/dil", "scenario": "domain", "trained_as": "domain", "seconds": 300.0,
         "run_cpu_seconds": None},
    ])
    rows.to_csv(tmp_path / "nb.csv", index=False)
    assert len(pipeline.run_times(tmp_path / "nb.csv")) == 2
    assert pipeline.run_cpu_hours(tmp_path / "nb.csv") == pytest.approx((60 + 300) / 3600)
    assert pipeline.run_cpu_hours(tmp_path / "missing.csv") is None


# ---------------------------------------------------------------------------------------------
# Which package changes concern a render


def test_package_hash_is_the_stamps_code_hash():
    from clrepro.paths import PACKAGE_DIR, code_hash

    assert pipeline._package_hash(PACKAGE_DIR) == code_hash()


def _fake_checkout(root):
    """A git checkout with a package `clrepro` (a imports b inside a function; c is imported by
    nobody; methods/x.py is a method module), one notebook importing clrepro.a, and results/."""
    import subprocess

    package = root / "clrepro"
    (package / "methods").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("def f():\n    from clrepro import b\n    return b.g()\n")
    (package / "b.py").write_text("def g():\n    return 1\n")
    (package / "c.py").write_text("X = 1\n")
    (package / "table.csv").write_text("k,v\n1,2\n")
    (package / "methods" / "__init__.py").write_text("")
    (package / "methods" / "x.py").write_text("Y = 1\n")
    (root / "notebooks").mkdir()
    make_notebook(root / "notebooks" / "nb.ipynb", "%matplotlib inline\nfrom clrepro import a\na.f()")
    (root / "results").mkdir()
    for command in (["init", "-q"], ["add", "-A"], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"]):
        subprocess.run(["git", *command], cwd=root, check=True)
    return package, subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, check=True, capture_output=True,
                                   text=True).stdout.strip()


def test_notebook_code_files_follow_the_imports(tmp_path):
    package, _ = _fake_checkout(tmp_path)
    files = pipeline.notebook_code_files(tmp_path / "notebooks" / "nb.ipynb", package)
    assert files == {"__init__.py", "a.py", "b.py", "table.csv"}


def test_a_render_is_compared_on_the_files_it_executes(tmp_path, monkeypatch):
    package, commit = _fake_checkout(tmp_path)
    notebook, results = tmp_path / "notebooks" / "nb.ipynb", tmp_path / "results"
    monkeypatch.setattr(pipeline, "REPO_ROOT", tmp_path)
    monkeypatch.setattr(pipeline, "PACKAGE_DIR", package)
    monkeypatch.setattr(pipeline, "code_hash", lambda: pipeline._package_hash(package))
    # x.py is the module of a method this notebook does not run (as the results would say).
    monkeypatch.setattr(pipeline, "method_files_not_run", lambda methods, nb=None: frozenset({"methods/x.py"}))
    params = {"profile": "paper", "device": "cpu"}
    stamp = {"commit": commit, "clean": True, "parameters": params,
             "code_inputs": pipeline.input_hash(notebook, params, code_only=True),
             "inputs": pipeline.input_hash(notebook, params)}

    def compare():
        return pipeline.compare_with_render(notebook, stamp, params, results)

    (package / "c.py").write_text("X = 2\n")  # imported by nobody
    (package / "methods" / "x.py").write_text("Y = 2\n")  # a method it does not run
    assert compare() == {"same": True, "changed": ["c.py", "methods/x.py"], "ignored": ["c.py", "methods/x.py"]}
    assert pipeline.compare_with_render(notebook, stamp, params, results, code_only=False)["same"]
    (package / "b.py").write_text("def g():\n    return 2\n")  # imported, inside a function
    assert compare()["same"] is False and "b.py" not in compare()["ignored"]
    (package / "b.py").write_text("def g():\n    return 1\n")
    (package / "table.csv").write_text("k,v\n1,3\n")  # every table counts
    assert compare()["same"] is False
    (package / "table.csv").write_text("k,v\n1,2\n")
    assert pipeline.compare_with_render(notebook, stamp, {**params, "device": "cuda"}, results)["same"] is False
    # What cannot be recovered or checked is not current: a stamp that does not hash to its
    # commit's files, a render from a dirty tree, a commit git does not know.
    assert pipeline.compare_with_render(notebook, {**stamp, "code_inputs": "0" * 64}, params, results) is None
    assert pipeline.compare_with_render(notebook, {**stamp, "clean": False}, params, results) is None
    assert pipeline.compare_with_render(notebook, {**stamp, "commit": "f" * 40}, params, results) is None


def test_a_change_to_files_a_notebook_does_not_execute_leaves_its_render_current(tmp_path, monkeypatch, capsys):
    pytest.importorskip("papermill")
    package, commit = _fake_checkout(tmp_path)
    notebook = tmp_path / "notebooks" / "nb.ipynb"
    for name, value in (("REPO_ROOT", tmp_path), ("PACKAGE_DIR", package), ("NOTEBOOKS_DIR", notebook.parent)):
        monkeypatch.setattr(pipeline, name, value)
    monkeypatch.setattr(pipeline, "code_hash", lambda: pipeline._package_hash(package))
    monkeypatch.setattr(pipeline, "method_files_not_run", lambda methods, nb=None: frozenset({"methods/x.py"}))
    monkeypatch.setenv("CLREPRO_OUTPUT", str(tmp_path))
    monkeypatch.setattr(pipeline, "update_durations", lambda: False)  # the README is the real one
    params = {"profile": "paper", "device": "cpu"}
    stamp = {"commit": commit, "clean": True, "parameters": params, "minutes": 1.0,
             "code_inputs": pipeline.input_hash(notebook, params, code_only=True),
             "inputs": pipeline.input_hash(notebook, params)}
    (tmp_path / "results" / ".stamps.json").write_text(json.dumps({"nb": stamp}))
    (package / "methods" / "x.py").write_text("Y = 2\n")
    row = pipeline.render_status("paper").set_index("notebook").loc["nb"]
    assert row["current"] and "methods/x.py" in row["reason"]
    assert pipeline.reproduce("paper", "cpu", allow_dirty=True) == 0
    assert "[skip] nb" in capsys.readouterr().out  # nothing re-run
    (package / "b.py").write_text("def g():\n    return 2\n")
    row = pipeline.render_status("paper").set_index("notebook").loc["nb"]
    assert not row["current"] and row["reason"] == "changed since its render: b.py"
