"""Rendering: report.html (figures inlined), summary.md and summary.json for a run or a comparison."""
