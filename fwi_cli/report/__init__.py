"""Reports of a run directory: the seed page's figures and a Markdown summary table."""

from fwi_cli.report.figures import ReportResult, load_run, make_report

__all__ = ["make_report", "load_run", "ReportResult"]
