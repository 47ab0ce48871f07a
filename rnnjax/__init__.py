"""rnnjax: recurrent sequence models in JAX built from pure step functions.

A cell is ``step(params, carry, x) -> (carry, y)``; ``rnnjax.scan`` runs it over time with
variable lengths and reversal. The conventions (time-major, ``(in, out)`` weights, PyTorch gate
order), the layering of the modules and the registry of built-in cells are described in
``docs/design.md``.

Every public name is re-exported here from the one module that defines it (``Checkpoints``
loads Orbax on first use). ``rnnjax.nnx``
(Flax NNX adapters, needs the ``nnx`` extra) and ``rnnjax.interop`` (weights from and to other
libraries) are submodules, imported on first use.
"""

from rnnjax.attention import (
    AdditiveParams,
    Attention,
    DotParams,
    GeneralParams,
    additive_attention,
    attend,
    dot_attention,
    general_attention,
    masked_softmax,
)
from rnnjax.blocks import (
    CausalConvParams,
    GatedMLPParams,
    HawkBlockParams,
    HawkBlockState,
    MLSTMBlockParams,
    MLSTMBlockState,
    MambaBlockParams,
    MambaBlockState,
    SLSTMBlockParams,
    SLSTMBlockState,
    causal_conv,
    causal_conv_step,
    gated_mlp,
    hawk_block,
    hawk_block_parallel,
    hawk_block_step,
    mamba_block,
    mamba_block_parallel,
    mamba_block_step,
    mlstm_block,
    mlstm_block_parallel,
    mlstm_block_step,
    rms_norm,
    slstm_block,
    slstm_block_step,
)
from rnnjax.cells import (
    CIFGParams,
    Cell,
    DampenedParams,
    ElmanParams,
    GRUParams,
    GRUResetBeforeParams,
    LSTMParams,
    LSTMProjParams,
    LSTMState,
    MinGRUParams,
    MinLSTMParams,
    PeepholeLSTMParams,
    cifg_lstm,
    cifg_lstm_step,
    dampened,
    dampened_step,
    elman,
    elman_step,
    gru,
    gru_reset_before,
    gru_reset_before_step,
    gru_step,
    lstm,
    lstm_proj_step,
    lstm_step,
    min_gru,
    min_gru_step,
    min_lstm,
    min_lstm_step,
    peephole_lstm,
    peephole_lstm_step,
)
from rnnjax.compose import (
    BiCarry,
    BiParams,
    DenseParams,
    SeqModel,
    StackedCarry,
    bidirectional,
    carry_hidden,
    deep,
    dense,
    dense_init,
    has_parallel_form,
    pool_last,
    pool_max,
    pool_mean,
    repeat_vector,
    rnn,
    stack,
    stack_layers,
    with_hidden,
)
from rnnjax.decode import (
    LanguageModel,
    LanguageModelParams,
    beam_search,
    greedy,
    language_model,
    sample,
    top_k_logits,
)
from rnnjax.diagnostics import gradient_flow, plot_gradient_flow, state_jacobian_norms
from rnnjax.distributed import data_mesh, replicate, shard_batch
from rnnjax.embed import (
    PretrainedVectors,
    check_ids,
    embedding_init,
    embedding_lookup,
    load_vectors,
    one_hot,
)
from rnnjax.losses import (
    classification_cross_entropy,
    mask_from_lengths,
    sequence_accuracy,
    sequence_cross_entropy,
    sequence_mse,
)
from rnnjax.conv_cells import ConvGRUParams, ConvLSTMParams, conv_gru, conv_gru_step, conv_lstm, conv_lstm_step
from rnnjax.learned_state import LearnedStateCarry, LearnedStateParams, learned_carry, learned_initial_state
from rnnjax.linear_rnn import (
    LRUParams,
    RGLRUParams,
    SelectiveSSMParams,
    lru,
    lru_parallel,
    lru_step,
    rg_lru,
    rg_lru_parallel,
    rg_lru_step,
    selective_ssm,
    selective_ssm_parallel,
    selective_ssm_step,
)
from rnnjax.norm_cells import (
    LayerNormGRUParams,
    LayerNormLSTMParams,
    layer_norm_gru,
    layer_norm_gru_step,
    layer_norm_lstm,
    layer_norm_lstm_step,
)
from rnnjax.parallel_time import DeerInfo, deer_scan, min_rnn_parallel
from rnnjax.packing import PackLayout, Packed, pack_sequences, segment_pool, unpack_sequences
from rnnjax.params_io import load_params, save_params
from rnnjax.simple_cells import IndRNNParams, MGUParams, indrnn, indrnn_step, mgu, mgu_step
from rnnjax.xlstm import (
    MLSTMParams,
    MLSTMState,
    SLSTMParams,
    SLSTMState,
    mlstm,
    mlstm_parallel,
    mlstm_step,
    slstm,
    slstm_step,
)
from rnnjax._registry import register_step
from rnnjax.records import MetricsLog, plot_curves, progress_bar, read_metrics
from rnnjax.scan import chunk_stream, flip_sequences, remat_scan, scan, truncated_scan
from rnnjax.seq2seq import Seq2Seq, Seq2SeqParams, Seq2SeqState, seq2seq
from rnnjax.train import TrainState, fit, init_train_state, make_optimizer, make_train_step

__version__ = "0.1.0"

__all__ = [
    # cells
    "Cell", "LSTMState",
    "ElmanParams", "LSTMParams", "PeepholeLSTMParams", "CIFGParams", "GRUParams",
    "GRUResetBeforeParams", "MinGRUParams", "MinLSTMParams", "DampenedParams",
    "elman", "elman_step", "lstm", "lstm_step", "LSTMProjParams", "lstm_proj_step", "peephole_lstm", "peephole_lstm_step",
    "cifg_lstm", "cifg_lstm_step", "gru", "gru_step", "gru_reset_before", "gru_reset_before_step",
    "min_gru", "min_gru_step", "min_lstm", "min_lstm_step", "dampened", "dampened_step",
    # more cells: layer-norm, IndRNN, MGU, convolutional
    "LayerNormLSTMParams", "LayerNormGRUParams", "layer_norm_lstm", "layer_norm_lstm_step",
    "layer_norm_gru", "layer_norm_gru_step", "IndRNNParams", "indrnn", "indrnn_step",
    "MGUParams", "mgu", "mgu_step", "ConvLSTMParams", "ConvGRUParams", "conv_lstm", "conv_lstm_step",
    "conv_gru", "conv_gru_step",
    # gated linear recurrences and xLSTM, each with a sequential step and (but sLSTM) a parallel form
    "LRUParams", "lru", "lru_step", "lru_parallel", "RGLRUParams", "rg_lru", "rg_lru_step",
    "rg_lru_parallel", "SelectiveSSMParams", "selective_ssm", "selective_ssm_step",
    "selective_ssm_parallel", "MLSTMParams", "MLSTMState", "mlstm", "mlstm_step", "mlstm_parallel",
    "SLSTMParams", "SLSTMState", "slstm", "slstm_step",
    # the papers' blocks (Mamba, Hawk, xLSTM) as decodable cells, and their generic pieces
    "MambaBlockParams", "MambaBlockState", "mamba_block", "mamba_block_step", "mamba_block_parallel",
    "HawkBlockParams", "HawkBlockState", "hawk_block", "hawk_block_step", "hawk_block_parallel",
    "MLSTMBlockParams", "MLSTMBlockState", "mlstm_block", "mlstm_block_step", "mlstm_block_parallel",
    "SLSTMBlockParams", "SLSTMBlockState", "slstm_block", "slstm_block_step",
    "CausalConvParams", "causal_conv", "causal_conv_step", "GatedMLPParams", "gated_mlp", "rms_norm",
    # the cell registry: fast paths for any step
    "register_step",
    # time loops
    "scan", "flip_sequences", "truncated_scan", "remat_scan", "chunk_stream",
    # parallel in time
    "min_rnn_parallel", "deer_scan", "DeerInfo",
    # composition
    "SeqModel", "StackedCarry", "BiParams", "BiCarry", "DenseParams",
    "rnn", "stack", "stack_layers", "has_parallel_form", "deep", "bidirectional", "carry_hidden", "with_hidden",
    "LearnedStateParams", "LearnedStateCarry", "learned_initial_state", "learned_carry",
    "pool_last", "pool_mean", "pool_max", "repeat_vector", "dense_init", "dense",
    "Packed", "PackLayout", "pack_sequences", "unpack_sequences", "segment_pool",
    # attention, encoder–decoder, decoding
    "Attention", "AdditiveParams", "GeneralParams", "DotParams",
    "additive_attention", "general_attention", "dot_attention", "attend", "masked_softmax",
    "Seq2Seq", "Seq2SeqParams", "Seq2SeqState", "seq2seq",
    "greedy", "sample", "beam_search", "top_k_logits",
    "LanguageModel", "LanguageModelParams", "language_model",
    # token inputs
    "embedding_init", "embedding_lookup", "check_ids", "one_hot", "load_vectors", "PretrainedVectors",
    # losses
    "sequence_cross_entropy", "classification_cross_entropy", "sequence_mse", "sequence_accuracy",
    "mask_from_lengths",
    # training
    "TrainState", "init_train_state", "make_optimizer", "make_train_step", "fit",
    "Checkpoints", "CheckpointIntegrityError", "MetricsLog", "read_metrics", "progress_bar", "plot_curves",
    "gradient_flow", "state_jacobian_norms", "plot_gradient_flow",
    "data_mesh", "replicate", "shard_batch",
    # plain parameter files
    "save_params", "load_params",
]

def _register_for_export() -> None:
    """Let ``jax.export`` serialise functions whose inputs or outputs hold rnnjax containers."""
    from jax import export

    for name in __all__:
        obj = globals().get(name)  # the lazily imported names hold no pytrees
        if isinstance(obj, type) and issubclass(obj, tuple) and hasattr(obj, "_fields"):
            export.register_namedtuple_serialization(obj, serialized_name=f"rnnjax.{name}")
    export.register_pytree_node_serialization(
        StackedCarry, serialized_name="rnnjax.StackedCarry",
        serialize_auxdata=lambda aux: b"", deserialize_auxdata=lambda data: None)


_register_for_export()

_SUBMODULES = ("interop", "nnx")
_LAZY = {"Checkpoints": "checkpoint", "CheckpointIntegrityError": "checkpoint"}  # Orbax loads on first use


def __getattr__(name: str):
    import importlib

    if name in _SUBMODULES:  # rj.interop, rj.nnx: imported on first use
        return importlib.import_module(f"rnnjax.{name}")
    if name in _LAZY:
        value = getattr(importlib.import_module(f"rnnjax.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'rnnjax' has no attribute {name!r}")
