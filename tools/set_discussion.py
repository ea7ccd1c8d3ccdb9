"""Replace a notebook's "## Discussion" markdown cell with the text of a file, in place.

Markdown is never executed, so a rendered notebook keeps its outputs; `make reproduce` sees
only prose changed and re-runs nothing (clrepro.run.pipeline.update_prose)."""

import sys
from pathlib import Path

import nbformat


def main(notebook: str, text_file: str, heading: str = "## Discussion") -> None:
    nb = nbformat.read(notebook, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "markdown" and c.source.lstrip().startswith(heading)]
    if len(cells) != 1:
        raise SystemExit(f"{notebook}: expected one markdown cell starting {heading!r}, found {len(cells)}")
    cells[0].source = Path(text_file).read_text().strip()
    nbformat.write(nb, notebook)


if __name__ == "__main__":
    main(*sys.argv[1:])
