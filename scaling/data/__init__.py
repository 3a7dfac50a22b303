"""Data layer: corpora (`corpus`), tokenizers (`tokenizer`), token caches and batches
(`tokens`) and downstream task data (`tasks`). No model code lives here."""
