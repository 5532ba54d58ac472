"""The p-diff baseline (Wang et al. 2024): autoencoder over the flattened parameters + latent diffusion.

Modules: :mod:`~rpg.pdiff.model` (PDiffConfig, ParamAutoencoder, PDiffModel) and :mod:`~rpg.pdiff.stages`
(train_pdiff, generate_pdiff, load_pdiff: the pipeline stages on a token store). Nothing is imported eagerly.
"""
