"""Reading, validating and writing cohorts: NIfTI, the layouts (one registry in layouts.py), the Subject record."""
from cardiolab.io.cohort import LABELS, Subject, write_subject
from cardiolab.io.layouts import LAYOUTS, detect_layout, read_cohort, validate_cohort, validate_subject_dir
from cardiolab.io.validate import Problem

__all__ = ["LABELS", "LAYOUTS", "Subject", "read_cohort", "write_subject", "detect_layout", "Problem",
           "validate_cohort", "validate_subject_dir"]
