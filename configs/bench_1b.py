"""A model of 1.17B parameters for the 8-GPU scaling run (FSDP over the GPUs, tensor
parallelism 2 as a variant): 20 layers, d_model 2048, 16 heads of 128, GELU MLP 8192,
vocabulary 32,000, FWL size 2048, rows of 1,024 tokens, batch 8 per GPU, bfloat16 compute."""

from configs import bench_ref


def get_config():
    c = bench_ref.get_config()
    c.model.d_model = 2048  # d
    c.model.num_layers = 20  # blocks: 20 x 12 d^2 = 1.01B, plus embedding, unembedding and the FWL head: 1.17B
    c.model.num_heads = 16  # head dim 128
    c.model.mlp_dim = 8192  # 4 d
    c.train.batch_size = 8  # per GPU
    c.model.remat = "dots_saveable"  # a 1.17B model: recompute to keep activations small
    c.model.scan_layers = True  # one compiled block; FSDP gathers pipelined across layers
    c.mesh.data = 1  # FSDP over every GPU
    c.mesh.fsdp = -1
    return c
