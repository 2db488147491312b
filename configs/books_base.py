"""About ten minutes on one GPU: an 8-layer, 512-wide model on public_domain_books."""

from configs import default


def get_config():
    c = default.get_config()
    c.data.dataset = "public_domain_books"  # 7.6M training tokens at 32k pieces
    c.data.vocab_size = 32000  # SentencePiece pieces
    c.data.seq_len = 512  # tokens per row
    c.model.d_model = 512  # width
    c.model.num_layers = 8  # blocks
    c.model.num_heads = 8  # head dim 64
    c.model.mlp_dim = 2048  # MLP width
    c.model.remat = "dots_saveable"  # trade recompute for memory
    c.model.scan_layers = True  # faster compiles
    c.train.batch_size = 32  # rows per step (16k tokens)
    c.train.num_steps = 5000  # about 11 epochs
    c.train.warmup_steps = 200  # linear warm-up
    c.train.learning_rate = 6e-4  # peak
    c.checkpoint.every_steps = 1000  # checkpoints
    c.eval.every_steps = 1000  # validation
    return c
