"""The RPG generator: recurrent backbone over token positions -> prototypes -> shared 1D-conv denoiser.

Modules (each small and separately tested):
  position     fixed / learned position embeddings over (layer index, token-in-layer index)
  permutation  learned embedding of the permutation state (run or checkpoint)
  mamba2       pure-torch Mamba2 layer (chunked SSD scan + step-by-step reference)
  backbones    build_backbone("mamba2" | "lstm" | "transformer", ...)
  denoiser     1D conv denoiser conditioned on a prototype and a timestep
  schedule     linear-beta diffusion schedule, add_noise, masked denoising loss
  samplers     DDPM / DDIM samplers (diffusers-style set_timesteps / step)
  presets      tiny / small / base / large configs and the typed GeneratorConfig
  model        RPGModel: prototypes once per (state, task), loss, generate
Nothing is imported here eagerly.
"""
