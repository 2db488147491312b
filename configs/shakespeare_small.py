"""Minutes on one GPU: a 4-layer, 256-wide model on the shakespeare dataset."""

from configs import default


def get_config():
    c = default.get_config()
    c.data.dataset = "shakespeare"  # 1.8M training tokens at 8k pieces
    c.data.vocab_size = 8000  # SentencePiece pieces
    c.data.seq_len = 256  # tokens per row
    c.train.batch_size = 32  # rows per step
    c.train.num_steps = 2000  # about 9 epochs
    c.train.warmup_steps = 100  # linear warm-up
    c.train.learning_rate = 1e-3  # peak
    c.model.dropout_rate = 0.1  # the corpus is small
    return c
