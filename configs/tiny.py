"""Seconds on a CPU: a 2-layer, 32-wide model on Shakespeare (for tests and smoke runs)."""

from configs import default


def get_config():
    c = default.get_config()
    c.data.vocab_size = 1000  # small vocabulary, small head
    c.data.seq_len = 64  # short rows
    c.model.d_model = 32  # tiny width
    c.model.num_layers = 2  # two blocks
    c.model.num_heads = 2  # head dim 16
    c.model.mlp_dim = 64  # tiny MLP
    c.train.batch_size = 8  # rows per step
    c.train.num_steps = 30  # a few steps
    c.train.warmup_steps = 5  # short warm-up
    c.train.learning_rate = 3e-3  # fast learning at this size
    c.checkpoint.every_steps = 10  # checkpoints during the run
    c.eval.every_steps = 15  # validation during the run
    c.eval.max_documents = 1  # quick validation: one play
    c.eval.batch_size = 8  # validation rows per batch
    c.log.every_steps = 1  # every step
    return c
