"""Rule params: canonical (a reformatted config reruns nothing) and pinned release to release.

Snakemake reruns a finished job when the ``repr`` of its params changes. ``tests/golden/params.json`` pins the
params of every rule of the default config, the presets and the test configs. A failing golden test means that
users who upgrade rerun finished work: if that is intended, update the file with

    RPG_UPDATE_GOLDEN=1 python -m pytest tests/test_params.py -k golden

and name, in the commit message (and the changelog), the stages that rerun (the skip message lists them).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from rpg.config import resolve_config
from rpg.stages.params import STAGES, stage_params, zoo_stages

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden" / "params.json"
UPDATE_ENV = "RPG_UPDATE_GOLDEN"
CONFIGS = ["config.yaml", *sorted(f"configs/{p.name}" for p in (ROOT / "configs").glob("*.yaml")),
           *sorted(f"tests/configs/{p.name}" for p in (ROOT / "tests" / "configs").glob("*.yaml")),
           "docs/byo_zoo.md"]  # fmt: skip


def all_params(raw: dict[str, Any]) -> dict[str, Any]:
    """{exp: {zoo: {stage: params}}} of every rule the workflow runs for each zoo of a config."""
    return {exp: {zoo: {stage: stage_params(s, stage) for stage in zoo_stages(s)} for zoo, s in zoos.items()}
            for exp, zoos in resolve_config(raw).items()}  # fmt: skip


def reprs(raw: dict[str, Any]) -> dict[str, str]:
    """{"exp/zoo/stage": repr(params)}: what Snakemake compares for each rule (the order of zoos is no param)."""
    return {f"{e}/{z}/{s}": repr(p) for e, zoos in all_params(raw).items() for z, st in zoos.items()
            for s, p in st.items()}  # fmt: skip


def reordered(value: Any) -> Any:
    """``value`` with the keys of every mapping in reverse order, at every depth."""
    if isinstance(value, dict):
        return {k: reordered(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reordered(v) for v in value]
    return value


def load(name: str) -> dict[str, Any]:
    """A config by path; ``docs/<page>.md``: the page's first YAML block (a source zoo: docs/byo_zoo.md)."""
    text = (ROOT / name).read_text()
    if name.endswith(".md"):
        text = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    return yaml.safe_load(text)


def test_stages_of_zoos_cover_every_rule_with_settings():
    used = {s for name in CONFIGS for zoos in resolve_config(load(name)).values() for z in zoos.values()
            for s in zoo_stages(z)}  # fmt: skip
    rules = "".join(p.read_text() for p in (ROOT / "workflow" / "rules").glob("*.smk"))
    assert set(STAGES) == used, set(STAGES) ^ used  # every stage is pinned by some config
    assert all(f'"{s}")' in rules for s in STAGES)  # and each is the params of a rule


@pytest.mark.parametrize("name", CONFIGS)
def test_reformatted_config_gives_the_same_params(name):
    raw = load(name)
    expected = reprs(raw)
    assert reprs(reordered(raw)) == expected  # keys in another order, at every depth
    assert reprs(yaml.safe_load(yaml.safe_dump(raw))) == expected  # what a YAML formatter writes


def test_integral_float_options_written_as_integers_give_the_same_params():
    raw = load("tests/configs/tiny.yaml")
    as_float, as_int = raw["experiments"]["tiny"], reordered(raw)["experiments"]["tiny"]
    edited = {"experiments": {"tiny": as_int}}
    as_float["train"].update(grad_clip=2.0, min_lr_ratio=0.0)
    as_int["train"].update(grad_clip=2, min_lr_ratio=0)
    as_float["generate"]["eta"], as_int["generate"]["eta"] = 1.0, 1
    as_int["evaluate"]["noise_levels"] = ["1e-2", 0.05]  # YAML 1.1 reads 1e-2 as text
    as_int["zoos"]["cnn_s"]["collect"]["finetune_epochs"] = 1  # the default is 1.0
    assert reprs(edited) == reprs(raw)


def test_free_form_mappings_are_sorted():
    raw = load("config.yaml")
    vit = raw["experiments"]["digits"]["zoos"]["vit"]
    assert list(vit["arch_kwargs"]) != sorted(vit["arch_kwargs"])  # written unsorted in the default config
    params = all_params(raw)["digits"]["vit"]["collect_run"]
    assert list(params["arch_kwargs"]) == sorted(vit["arch_kwargs"])
    assert params["arch_kwargs"] == vit["arch_kwargs"]


def _changes(old: dict, new: dict) -> list[str]:
    """'config: exp/zoo/stage' of every rule whose params differ (or exist on one side only)."""
    out = []
    for cfg in sorted(set(old) | set(new)):
        a, b = old.get(cfg, {}), new.get(cfg, {})
        keys = {(e, z, s) for d in (a, b) for e in d for z in d[e] for s in d[e][z]}
        for e, z, s in sorted(keys):
            x, y = a.get(e, {}).get(z, {}).get(s), b.get(e, {}).get(z, {}).get(s)
            if repr(x) != repr(y):
                out.append(f"{cfg}: {e}/{z}/{s}")
    return out


def test_golden_params_of_every_rule():
    """The params of every rule, as Snakemake compares them (their repr, so key order and 2 vs 2.0 count)."""
    actual = {name: all_params(load(name)) for name in CONFIGS}
    actual = json.loads(json.dumps(actual))  # as stored: JSON keeps the order of keys, ints and floats
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.is_file() else {}
    changed = _changes(golden, actual)
    if os.environ.get(UPDATE_ENV):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(actual, indent=1) + "\n")
        if not golden:
            pytest.skip(f"created {GOLDEN.name}")
        pytest.skip(f"updated {GOLDEN.name}; these rules rerun for users who upgrade (name them in the commit): "
                    + ("; ".join(changed) or "none"))  # fmt: skip
    assert not changed, (
        f"the params of {len(changed)} rule(s) changed, so finished jobs of users who upgrade rerun:\n  "
        + "\n  ".join(changed[:40])
        + f"\nIf intended: {UPDATE_ENV}=1 python -m pytest tests/test_params.py -k golden, and name these stages "
        "in the commit message / changelog."
    )
