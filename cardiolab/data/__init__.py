"""Data: the 4D cine phantom (phantom.py), preprocessing into the cache (prepare.py), torch Datasets
(datasets.py) and the subject attributes a generator is conditioned on (attributes.py)."""
