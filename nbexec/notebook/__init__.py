"""The notebook face of nbexec: the ``%train`` / ``%%train`` magics and the live run view.

``%load_ext nbexec`` registers the magics (:mod:`nbexec.notebook.magics`).
The views are the core's plain functions of data (:mod:`nbexec.render.live`,
:mod:`nbexec.render.summary`) shown by a runner sink
(:class:`~nbexec.notebook.live.LiveRunView`); this layer renders and forwards,
every decision about a run is the core's.
"""

from __future__ import annotations
