"""`python -m cardiolab report`: gather a profile's runs into report.md + report.csv + figures."""
from __future__ import annotations

import logging

HELP = "gather runs/<profile> into report.md, report.csv and figures"
log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    p.add_argument("--runs", required=True, help="a profile's run folder, e.g. runs/tiny")
    p.add_argument("--out", default=None, help="report path (default <runs>/report.md)")


def run(args) -> int:
    from cardiolab.reporting.report import build_report  # lazy: CLI start-up
    from cardiolab.reporting.reproduce import publish_figures
    out = build_report(args.runs, args.out)
    log.info("report: %s", out)
    for path in publish_figures(args.runs):   # the tiny run's key figures, shown by the README
        log.info("figure: %s", path)
    return 0
