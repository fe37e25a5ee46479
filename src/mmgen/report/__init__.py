"""The evaluation report: assembled from the stored jobs (:mod:`.assemble`), written as
``report.json`` and rendered as ``report.md`` (:mod:`.markdown`).

The public names of both modules are re-exported here, so ``from mmgen.report import X`` works
for each of them.
"""

from mmgen.report.assemble import assemble_report, clear_report
from mmgen.report.markdown import (
    MISSING,
    REPORT_JSON,
    REPORT_MD,
    letter_key,
    render_markdown,
    render_verdict,
    verdict_key,
    write_report,
)

__all__ = [
    "MISSING",
    "REPORT_JSON",
    "REPORT_MD",
    "assemble_report",
    "clear_report",
    "letter_key",
    "render_markdown",
    "render_verdict",
    "verdict_key",
    "write_report",
]

