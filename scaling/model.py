"""Shim: shapes and the ladder moved to `scaling.core.shapes`, the GPT to `scaling.train.model`.
Kept for scaling/study until its imports are re-pointed."""

from scaling.core.shapes import (LADDER, ModelShape, ladder_shape, non_embedding_params,  # noqa: F401
                                 total_params, train_flops_per_token)
