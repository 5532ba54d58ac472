# Helpers of the p-diff baseline rules (workflow/rules/pdiff.smk).


def pdiff_enabled(exp, zoo):
    settings = SETTINGS[exp][zoo]
    return bool(settings["pdiff"]["enabled"]) and not settings.get("tasks")


PDIFF_PAIRS = [(exp, zoo) for exp, zoo in PAIRS if pdiff_enabled(exp, zoo)]


def pdiff_models(w):
    """The p-diff models of a zoo for its evaluation (none when p-diff is not enabled)."""
    if not pdiff_enabled(w.exp, w.zoo):
        return []
    n = SETTINGS[w.exp][w.zoo]["generate"]["num_models"]
    return [
        f"results/{w.exp}/generated_pdiff/{w.zoo}/model_{i:03d}.safetensors"
        for i in range(n)
    ]
