"""The notebooks run top to bottom against a tiny trained sweep, and draw their figures.

Sources are jupytext percent files (``notebooks/NN_name.py``, paired with an untracked ``.ipynb``); each is
turned into a notebook and executed in a fresh IPython kernel by nbclient, as Jupyter would run it.
"""

from __future__ import annotations

import os

import pytest

from .conftest import REPO, SHARED_DATA

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))
FIGURES = {
    "01_quickstart": ["01_synthetic", "01_coco_photo", "01_per_predicate_recall"],
    "02_zero_shot_transfer": ["02_similarity_heatmap", "02_transferred_vs_true", "02_gaussian_kernels"],
    "03_results": ["03_ablation", "03_mask_ap"],
}


def test_the_three_notebooks_are_paired_jupytext_sources():
    assert [p.stem for p in NOTEBOOKS] == sorted(FIGURES)
    for path in NOTEBOOKS:
        head = path.read_text().split("# ---", 2)[1]
        assert "formats: ipynb,py:percent" in head and "name: python3" in head, path


@pytest.mark.slow
@pytest.mark.xdist_group("tiny_sweep")
@pytest.mark.parametrize("path", [
    pytest.param(p, marks=pytest.mark.skipif(
        '"shared" / "data"' in p.read_text() and not SHARED_DATA.is_dir(),
        reason=f"{p.name} reads the real samples in {SHARED_DATA}, which this checkout does not have"))
    for p in NOTEBOOKS
], ids=lambda p: p.stem)  # fmt: skip
def test_notebook_executes_and_draws_its_figures(path, tiny_sweep, tmp_path, monkeypatch):
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    figures = tmp_path / "figures"
    for key, value in {
        "SGSEG_RUN_DIR": tiny_sweep.jobs["refine"],
        "SGSEG_SWEEP_DIR": tiny_sweep.sweep,
        "SGSEG_FIGURES": figures,
        "SGSEG_MIN_SCORE": "0.0",  # the tiny detector's scores are low; draw what it finds
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
    }.items():
        monkeypatch.setenv(key, str(value))
    notebook = jupytext.read(path)
    client = NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})  # fmt: skip
    try:
        client.execute()
    finally:
        nbformat.write(notebook, tmp_path / f"{path.stem}.ipynb")  # the executed notebook, for a look
    for name in FIGURES[path.stem]:
        assert (figures / f"{name}.png").stat().st_size > 5_000, name
    shown = [o for c in notebook.cells if c.cell_type == "code" for o in c.get("outputs", [])
             if "image/png" in o.get("data", {})]  # fmt: skip
    assert len(shown) >= len(FIGURES[path.stem])  # every figure is displayed, not only saved
