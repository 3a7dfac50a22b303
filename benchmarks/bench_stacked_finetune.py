"""Fine-tuning alone, K = 6 models: six per-model fine-tunes against one stacked fine-tune, in
CPU seconds of this process (one thread), 40 steps of each task's recipe at 13k and 56k.

    python benchmarks/bench_stacked_finetune.py
"""
import copy, time, torch
torch.set_num_threads(1)
from scaling.config import RunConfig, model_shape
from scaling.data.tokens import load_pretrain_data
from scaling.data import tasks as T
from scaling.train.model import GPT
from scaling.train.finetune import finetune
from scaling.train.stacked_model import StackedGPT
from scaling.train.stacked_finetune import stacked_finetune
data = load_pretrain_data(None, "byte")
for name, steps in (("arithmetic", 40), ("source", 40)):
    T.RECIPES[name] = T.FinetuneRecipe(steps=steps, lr=T.RECIPES[name].lr, batch_size=T.RECIPES[name].batch_size)
    task = T.get_task(name, data.tokenizer, data.heldout_docs, seed=0)
    for size in ("13k", "56k"):
        shape = model_shape(RunConfig(size=size))
        models = []
        for s in range(6):
            torch.manual_seed(s); models.append(GPT(shape, 258, 128))
        c0 = time.process_time()
        for m in models:
            finetune(copy.deepcopy(m), task, data.tokenizer, torch.device("cpu"), 0)
        seq = time.process_time() - c0
        base = StackedGPT.from_models(models, torch.device("cpu"))
        c0 = time.process_time()
        stacked_finetune(base, list(range(6)), [task] * 6, [0] * 6, data.tokenizer)
        stk = time.process_time() - c0
        print(f"{name} {size} K=6 {steps} steps: sequential {seq:.2f} CPU s, stacked {stk:.2f} CPU s, ratio {seq/stk:.2f}", flush=True)
