"""How runs read: pure functions of plain data, shared by the CLI, the notebook layer and the core's reprs.

- :mod:`~nbexec.render.formats` — durations, metric values, progress labels;
- :mod:`~nbexec.render.markup` — HTML building blocks (every text escaped);
- :mod:`~nbexec.render.links` — pages of runs on an MLflow server;
- :mod:`~nbexec.render.summary` — the end-of-run summary (:class:`~nbexec.render.summary.RunSummary`);
- :mod:`~nbexec.render.live` — the live run view (:class:`~nbexec.render.live.LiveSnapshot`);
- :mod:`~nbexec.render.lineage` — the lineage table.

Nothing here prints, displays or touches a kernel, and nothing imports IPython,
ipywidgets, torch or mlflow (``tests/core/test_import_boundary.py``): the faces
decide where the text and HTML go.
"""
