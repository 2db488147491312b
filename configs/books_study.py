"""docs/RESULTS.md: an 8-layer, 512-wide model on public_domain_books, trained for ~41M tokens
(about 5.4 epochs) with dropout; each run trains and evaluates in a few minutes on one GPU."""

from configs import books_base


def get_config():
    c = books_base.get_config()
    c.model.dropout_rate = 0.1  # several epochs of a small corpus
    c.train.num_steps = 2500  # 16k tokens a step
    c.train.warmup_steps = 200  # linear warm-up
    c.checkpoint.every_steps = 2500  # the final checkpoint only
    c.checkpoint.keep = 1  # disk: one checkpoint a run
    c.eval.every_steps = 500  # the validation curve
    c.eval.batch_size = 8  # documents scored side by side (5 in each held-out split)
    c.log.every_steps = 50  # metrics
    c.log.progress_bar = False  # logs, not a terminal
    return c
