"""Snakemake adapter: tokenize a zoo into layout/index tables and token shards (rpg.tokens)."""

from rpg.runtime import stage_logging
from rpg.tokens.store import write_token_store

sm = snakemake  # noqa: F821 (injected by Snakemake)
with stage_logging(sm.log[0], sm.threads):
    cfg = sm.params.tokens
    write_token_store(
        list(sm.input.checkpoints),
        sm.output[0],
        token_size=cfg["token_size"],
        shard_size=cfg["shard_size"],
        state=cfg["state"],
        dtype=cfg["dtype"],
    )
