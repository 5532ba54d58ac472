"""Adapter zoos: PEFT LoRA/DoRA adapters on a frozen transformers model, as a zoo the pipeline generates.

An adapter checkpoint holds only the adapter tensors (and, for classification, the head), under the names PEFT saves
them with, so that tokenization, training and generation treat it like any other zoo. Modules, by concern:

- :mod:`~rpg.adapters.spec`: the adapter's description (``arch_kwargs`` of its checkpoints) and its PEFT config;
- :mod:`~rpg.adapters.base`: the base model read from a local folder (never the hub), the classifier on its pooled
  output, a fresh PEFT model;
- :mod:`~rpg.adapters.model`: :class:`~rpg.adapters.model.AdapterModel`, the ``nn.Module`` of one checkpoint (its
  state_dict is the adapter), running on a base shared by the process;
- :mod:`~rpg.adapters.inputs`: tokenized inputs, cached frozen layers, likelihoods of answer options;
- :mod:`~rpg.adapters.collect`: fine-tuning the runs of a zoo;
- :mod:`~rpg.adapters.evaluate`: :class:`~rpg.adapters.evaluate.AdapterEvaluator` (the evaluator interface);
- :mod:`~rpg.adapters.peft_io`: our checkpoints to and from PEFT folders;
- :mod:`~rpg.adapters.encoder`: sentence embeddings (for prompts).

transformers and peft are an optional extra (``pip install .[adapters]``); they are imported only inside functions.
"""
