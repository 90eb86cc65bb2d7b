"""The panel's colours and CSS, all JupyterLab theme variables: they follow its light and dark themes.

Each ``var(--jp-...)`` has a fallback for front ends without JupyterLab's variables
(VS Code, Colab, a notebook rendered as a static page).
"""

from __future__ import annotations

ERROR_COLOUR = "var(--jp-error-color1, #b91c1c)"
MUTED_COLOUR = "var(--jp-ui-font-color2, #6b7280)"
BORDER_COLOUR = "var(--jp-border-color2, #e0e0e0)"
FRAME_COLOUR = "var(--jp-border-color1, #9ca3af)"
LINK_COLOUR = "var(--jp-content-link-color, #1976d2)"

# Given to the panel once (a hidden HTML widget): widgets' looks that have no widget option.
PANEL_CSS = """<style>
.nbexec-panel .jupyter-button:disabled, .nbexec-panel .jupyter-button.mod-disabled {
  cursor: not-allowed; opacity: var(--jp-widgets-disabled-opacity, 0.6);
}
.nbexec-panel .nbexec-history a { color: var(--jp-content-link-color, #1976d2); }
</style>"""
