"""Reporting: the notebooks through papermill (reproduce) and runs/<profile> -> report.md (report)."""
