"""Models, one readable file each (`vqgan.py`, `dit4d.py`, ...): the networks only; training lives in `cardiolab.tasks`."""
