"""Every field of a training run, with its default. Other configs start from this one.

Override any field on the command line: `--config.train.learning_rate=1e-3`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()

    c.data = ml_collections.ConfigDict()
    c.data.dataset = "shakespeare"  # text_files, shakespeare, public_domain_books, wikitext103, pg19
    c.data.data_dir = "data"  # where datasets, tokenizers and token caches are kept
    c.data.source = ""  # local copy of the raw data (folder or archive); "" = fetch it
    c.data.corpus = "default"  # text_files: a name for the corpus
    c.data.vocab_size = 8000  # SentencePiece pieces (the model's vocabulary)
    c.data.seq_len = 256  # tokens per training row
    c.data.seed = 0  # shuffling seed of documents and rows
    c.data.num_threads = 2  # grain reader threads
    c.data.prefetch = 16  # batches read ahead

    c.model = ml_collections.ConfigDict()
    c.model.d_model = 256  # width of the residual stream
    c.model.num_layers = 4  # transformer blocks
    c.model.num_heads = 4  # query heads
    c.model.num_kv_heads = 0  # key/value heads; 0 = num_heads
    c.model.mlp_dim = 1024  # hidden width of each MLP
    c.model.mlp_type = "swiglu"  # gelu or swiglu
    c.model.norm_type = "rmsnorm"  # layernorm or rmsnorm
    c.model.norm_eps = 1e-6  # epsilon of the body's norms
    c.model.rope_base = 10000.0  # RoPE wavelength base
    c.model.dropout_rate = 0.0  # residual and embedding dropout
    c.model.dtype = "auto"  # compute dtype; auto = bfloat16 on GPU/TPU, float32 on CPU
    c.model.param_dtype = "float32"  # parameters and optimizer state
    c.model.remat = "none"  # none, full or dots_saveable
    c.model.scan_layers = False  # one lax.scan over the layers (faster compiles)
    c.model.attention_impl = "auto"  # xla, cudnn, cudnn_packed or auto (cudnn on GPU without segments)
    c.model.fwl_enabled = True  # fast weights on; off = the same parameters, plain head

    c.fwl = ml_collections.ConfigDict()
    c.fwl.size = 0  # s, the head's width before the unembedding; 0 = d_model
    c.fwl.hidden_mult = 4  # m = hidden_mult * s
    c.fwl.step_size_init = 0.01  # initial value of each learned step size
    c.fwl.meta_gradient = "full"  # full (second order) or first_order
    c.fwl.attention_method = "auto"  # causal_linear_attention method
    c.fwl.chunk_size = 0  # chunk length of the chunked method; 0 = chosen with the method
    c.fwl.attention_mixed_precision = True  # linear attention: scores x values and queries x states in the compute dtype (False: float32)
    c.fwl.unembed_chunk = 256  # positions per chunk of the vocabulary-sized work (memory); 0 = whole window
    c.fwl.gradient_chunk = 0  # positions per chunk of the per-token gradient e U^T (memory); 0 = unembed_chunk
    c.fwl.inner_loss_scale = 0.0  # inner loss factor; 0 = 1 / seq_len
    c.fwl.inner_loss_normalization = "sum"  # sum or prefix_mean
    c.fwl.fast_update = "W1,b1,W2,b2,ln_scale,ln_bias"  # tensors that take the fast step

    c.train = ml_collections.ConfigDict()
    c.train.seed = 0  # parameter init and dropout
    c.train.batch_size = 32  # rows per step, over all processes
    c.train.num_steps = 1000  # optimizer steps
    c.train.grad_accum_steps = 1  # micro-batches per step (batch_size must divide)
    c.train.learning_rate = 1e-3  # peak learning rate
    c.train.warmup_steps = 100  # linear warm-up from 0
    c.train.schedule = "cosine"  # cosine, rsqrt or constant after warm-up
    c.train.min_lr_ratio = 0.1  # cosine: final learning rate / peak
    c.train.weight_decay = 0.1  # AdamW decay of matrices (not biases, norms, step sizes)
    c.train.b1 = 0.9  # Adam beta1
    c.train.b2 = 0.95  # Adam beta2
    c.train.eps = 1e-8  # Adam epsilon
    c.train.grad_clip = 1.0  # global gradient norm limit; 0 = none
    c.train.step_size_lr_mult = 10.0  # learning rate multiplier of the fast-weight step sizes

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # data-parallel size; -1 = the devices left over
    c.mesh.fsdp = 1  # parameter-sharded data-parallel size
    c.mesh.tensor = 1  # tensor-parallel size

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 500  # save every N steps (and at the end)
    c.checkpoint.keep = 3  # checkpoints kept
    c.checkpoint.async_save = True  # save in the background

    c.eval = ml_collections.ConfigDict()
    c.eval.every_steps = 500  # validate every N steps (and at the end); 0 = never
    c.eval.max_documents = 0  # validation (and eval.py): the first N documents; 0 = all
    c.eval.batch_size = 32  # validation rows per batch; eval.py: documents scored side by side
    c.eval.split = "test"  # eval.py: the split to score (train, validation or test)
    c.eval.mode = "standard"  # eval.py: standard, dynamic, fwl_test_time or fwl+dynamic
    c.eval.checkpoint_step = 0  # eval.py: the checkpoint to load; 0 = the latest
    c.eval.carry = "decay"  # fast-weight state across windows: carry, reset or decay (see README)
    c.eval.carry_decay = 0.5  # carry=decay: factor on the state at each window boundary
    c.eval.step_sizes = "0.01"  # fwl_test_time: one step size, or six for W1,b1,W2,b2,ln_scale,ln_bias
    c.eval.segment_len = 0  # dynamic: tokens scored before each update (divides seq_len); 0 = seq_len
    c.eval.lr = 1e-4  # dynamic: learning rate of the update
    c.eval.rule = "sgd"  # dynamic: sgd or rms (Krause et al. 2018)
    c.eval.decay = 0.0  # dynamic, rms: decay toward the trained parameters
    c.eval.eps = 1e-8  # dynamic, rms: added to the root mean squared gradient
    c.eval.rms_floor = 0.1  # dynamic, rms: sqrt(ms) floored at this times its tensor's mean; 0 = as published
    c.eval.dynamic_params = "all"  # dynamic: which parameters adapt: all, head or body
    c.eval.merge_every = 0  # dynamic, sgd: segments whose kernel steps stay low-rank before a merge; 0 = 2 (or 1)
    c.eval.ms_batches = 20  # dynamic, rms: training batches for the mean squared gradient
    c.eval.name = ""  # eval.py: file stem of the report under WORKDIR/eval; "" = SPLIT_MODE[_CARRY]
    c.eval.sweep = ""  # eval.py: comma-separated values of lr (dynamic modes) or step size
    #                    (fwl_test_time) tried on validation; the best scores eval.split
    c.eval.compare = ""  # eval.py: "A,B" (run folders or .npz files): figures of B against A

    c.study = ml_collections.ConfigDict()  # study.py (docs/RESULTS.md)
    c.study.sgd_sweep = "1e-2,3e-2,1e-1,3e-1"  # dynamic SGD learning rates tried on validation
    c.study.rms_sweep = "3e-6,1e-5,3e-5,1e-4,3e-4"  # dynamic RMS learning rates tried on validation
    c.study.rms_decay = 0.01  # dynamic RMS: decay toward the trained parameters
    c.study.step_size_sweep = "1e-3,1e-2,1e-1"  # fwl_test_time step sizes tried on validation

    c.log = ml_collections.ConfigDict()
    c.log.every_steps = 10  # metrics every N steps
    c.log.peak_tflops = 0.0  # device peak for MFU; 0 = from the table of known devices
    c.log.progress_bar = True  # a progress bar on the terminal

    c.init_from = ""  # another run's workdir: start from its latest parameters
    c.distributed = False  # call jax.distributed.initialize() (auto when the cluster says so)
    c.allow_config_mismatch = False  # resume even if the model or data differ from the checkpoint
    return c
