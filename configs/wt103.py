"""WikiText-103 in the spirit of the paper: long rows, a 16-layer model, 32k pieces.

Needs the data: prepare downloads wikitext-103-raw-v1.zip, or point data.source at a copy.
"""

from configs import default


def get_config():
    c = default.get_config()
    c.data.dataset = "wikitext103"  # one document per article
    c.data.vocab_size = 32000  # SentencePiece pieces
    c.data.seq_len = 1024  # long rows: the head adapts over whole articles
    c.model.d_model = 768  # width
    c.model.num_layers = 16  # blocks
    c.model.num_heads = 12  # head dim 64
    c.model.mlp_dim = 3072  # MLP width
    c.model.dropout_rate = 0.1  # regularisation
    c.model.remat = "dots_saveable"  # trade recompute for memory
    c.model.scan_layers = True  # faster compiles
    c.train.batch_size = 64  # rows per step (64k tokens)
    c.train.num_steps = 100_000  # about 60 epochs of 103M tokens
    c.train.warmup_steps = 2000  # linear warm-up
    c.train.learning_rate = 3e-4  # peak
    c.checkpoint.every_steps = 2000  # checkpoints
    c.eval.every_steps = 2000  # validation
    c.eval.max_documents = 0  # the whole validation split
    return c
