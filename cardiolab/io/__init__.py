"""Reading and writing cine CMR cohorts: NIfTI, the ACDC and M&Ms layouts, validation."""
from cardiolab.io.acdc import read_acdc
from cardiolab.io.cohort import LABELS, Subject, read_cohort, write_subject
from cardiolab.io.mnms import read_mnms
from cardiolab.io.validate import Problem, validate_cohort, validate_subject_dir

__all__ = ["LABELS", "Subject", "read_cohort", "write_subject", "read_acdc", "read_mnms",
           "Problem", "validate_cohort", "validate_subject_dir"]
