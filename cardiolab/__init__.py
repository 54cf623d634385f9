"""cardiolab: synthetic 4D cine cardiac MRI, from phantom cohorts to privacy audits."""
from cardiolab.core import CardiolabError, seed_everything
from cardiolab.profiles import PROFILES, Profile, get_profile, with_data

__version__ = "0.1.0"
__all__ = ["CardiolabError", "seed_everything", "PROFILES", "Profile", "get_profile", "with_data", "__version__"]
