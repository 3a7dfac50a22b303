"""Training: the model, the one training loop for one or K stacked models, cooldown branches,
fine-tuning, probes, the benchmark, and the pipeline that makes a trial's metrics.

    model          GPT, the reference model
    loop           Run, train_steps (the training loop), divergence, metrics
    single         SingleRun and `pretrain`: one GPT with PyTorch's AdamW (the reference trainer)
    stacked        StackedRun and `pretrain_batched`: K models trained as one
    stacked_model  StackedGPT and StackedAdamW;  stacked_ops: their fused kernels
    threads        one group of models per CPU thread
    cooldown       several token budgets from one WSD run
    finetune       fixed-recipe fine-tuning and scoring;  probes: linear probe, QK rank
    preflight      check_inputs: everything a run reads, checked before it trains
    pipeline       pretrain -> probes -> fine-tune -> score (run_pipeline and its K-model forms)
    bench          throughput against a plain PyTorch loop
"""
