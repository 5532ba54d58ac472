"""Snakemake adapter: train the generator (rpg.train); several processes via torchrun when train.nproc > 1."""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rpg.runtime import stage_logging
from rpg.train import train_generator

sm = snakemake  # noqa: F821 (injected by Snakemake)
out_dir = Path(sm.output.model).parent
with stage_logging(sm.log[0], sm.threads) as log:
    nproc = int(sm.params.train["nproc"])
    if nproc == 1:
        train_generator(
            token_dir=sm.input.tokens,
            out_dir=out_dir,
            generator_cfg=sm.params.generator,
            train_cfg=sm.params.train,
            device=sm.params.device,
        )
    else:
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump({"generator": sm.params.generator, "train": sm.params.train}, f)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "rpg.train", "--token-dir", sm.input.tokens, "--out-dir", str(out_dir),
               "--config-json", f.name, "--device", sm.params.device]
        log.info("launching %s", " ".join(cmd))
        subprocess.run(cmd, check=True, stdout=sys.stderr, stderr=sys.stderr)
