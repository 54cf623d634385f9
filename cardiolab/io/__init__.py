"""Reading and writing cine CMR cohorts: NIfTI, the ACDC and M&Ms layouts, validation."""
from cardiolab.io.cohort import LABELS, Subject, read_cohort, write_subject

__all__ = ["LABELS", "Subject", "read_cohort", "write_subject"]
