"""`python -m cardiolab encode`: encode the prepared cohort with a trained VQ-GAN into 4D latents for the DiT."""
from __future__ import annotations

import logging
from pathlib import Path

from cardiolab.cli import add_data, add_profile, resolve_profile
from cardiolab.data.prepare import ensure_prepared

HELP = "encode the prepared cache into 4D VQ-GAN latents (latents.pt)"
log = logging.getLogger(__name__)


def add_arguments(p) -> None:
    add_profile(p)
    add_data(p)
    p.add_argument("--run", type=Path, default=None, help="VQ-GAN run folder (default runs/<profile>/vqgan)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default runs/<profile>/latents)")
    p.add_argument("--cache", type=Path, default=None,
                   help="prepared cache (default: the data source's, data/cache/<profile> for the phantom)")
    p.add_argument("--scale-from", type=Path, default=None, metavar="RUN",
                   help="record this run's (or latents.pt's) latent scale instead of one from this cache's subjects "
                        "(a private cache for dit-dp: pass the public DiT run)")


def run(args) -> int:
    from cardiolab.tasks.vqgan import encode_cohort  # lazy: CLI start-up

    profile = resolve_profile(args)
    run_dir = args.run or profile.run("vqgan")
    cache = args.cache or ensure_prepared(profile)
    path = encode_cohort(run_dir, cache, args.out or profile.run("latents"), scale_from=args.scale_from)
    log.info("latents: %s", path)
    return 0
