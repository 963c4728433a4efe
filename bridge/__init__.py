"""What joins the live driver and the simulator, beside both and inside neither.

`engine.live` and `sim` never import each other (an import-linter contract);
a tool that needs both, such as `egress replay` (a live journal's traffic
re-run in the simulator), lives here and imports each lazily.
"""
