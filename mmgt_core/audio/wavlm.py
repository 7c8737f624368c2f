"""WavLM last-layer features at 25 fps for Stage I, on ``transformers.WavLMModel``.

Official path (``data/audio_extraction/wavlm_features.py`` + ``data/wavlm/WavLM.py``, unilm code):

1. 16 kHz waveform; if ``cfg.normalize`` (true for WavLM-Large) ``F.layer_norm`` over the *whole* waveform.
2. ``model.extract_features(wav)[0]``: the final encoder layer output at 50 Hz, followed by the encoder's final
   LayerNorm when ``cfg.layer_norm_first`` (WavLM-Large). In transformers that is ``WavLMModel(...).last_hidden_state``
   with ``do_stable_layer_norm=True`` (``WavLMEncoderStableLayerNorm`` applies ``encoder.layer_norm`` after the
   last layer); with ``layer_norm_first=False`` both apply that norm before the layers instead.
3. Duplicate the last 50 Hz frame, then ``F.interpolate(size=ceil(n/2), mode="linear", align_corners=True)``.

Weights come from (a) a local Hugging Face folder (``WavLMModel.from_pretrained(dir, local_files_only=True)``),
(b) the official unilm checkpoint ``WavLM-Large.pt`` (``{"cfg", "model"}``, opened with ``weights_only=True``)
converted by the explicit key map in :func:`convert_unilm_wavlm`, or (c) our converted ``.safetensors`` export
(:func:`export_wavlm_safetensors`; component ``"wavlm"``, transformers layout, config in the metadata).

Long audio: self-attention is quadratic in length (WavLM-Large on 10 min = 30,000 frames would need ~58 GB per
attention map), so clips longer than ``chunk_seconds`` are cut into chunks of ``chunk_seconds`` with
``context_seconds`` of extra audio on each side; only each chunk's own frames are kept and the 50 Hz frames are
concatenated before the 25 fps step. Chunk borders sit on the CNN's frame grid (multiples of 320 samples), so the
CNN features equal the unchunked ones exactly (layer-norm extractor, as in WavLM-Large; a group-norm extractor,
WavLM Base, normalises over time and so is only approximated); the transformer output differs slightly because
attention cannot see beyond the context. Clips up to ``chunk_seconds`` (default 20 s) run in one piece, exactly
as the official code. Within a chunk, attention runs a block of query rows at a time
(:func:`_attention_in_row_blocks`, the same result as transformers' own), so no ``heads x T x T`` tensor is built.
"""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MethodType
from typing import TYPE_CHECKING, Any, Optional, Union

import torch
import torch.nn.functional as F

from mmgt_core.audio.waveform import (
    WaveformLike,
    conv_frames,
    conv_geometry,
    frame_count,
    to_mono,
    validate_clip,
)
from mmgt_core.constants import ENCODER_SAMPLE_RATE
from mmgt_core.errors import WeightsError
from mmgt_core.timeline import fit_length
from mmgt_core.types import OptionalCancel, OptionalProgress
from mmgt_core.weights import (
    COMPONENT_WAVLM_UNILM,
    load_weights,
    read_config,
    save_weights,
    strict_load,
)

if TYPE_CHECKING:
    from transformers import WavLMModel

COMPONENT_WAVLM = "wavlm"
"""Our converted export: transformers ``WavLMModel`` keys, its config JSON in the ``mmgt_config`` metadata."""
NORMALIZE_CONFIG_KEY = "mmgt_normalize_waveform"
"""Extra key kept in the transformers config: apply the official whole-waveform layer_norm first."""

DEFAULT_CHUNK_SECONDS = 20.0
DEFAULT_CONTEXT_SECONDS = 5.0
ATTENTION_BLOCK_ELEMENTS = 1 << 20
"""Attention scores one block of query rows may hold (heads x rows x keys): 4 MiB in float32."""
WAVLM_LARGE_HIDDEN_SIZE = 1024
"""Width of WavLM-Large's last layer, the released Stage-I encoder."""

_UNILM_ACTIVATIONS = {"gelu": "gelu", "relu": "relu", "tanh": "tanh", "linear": "linear",
                      "gelu_accurate": "gelu_new", "gelu_fast": "gelu_new"}


@dataclass
class WavLMEncoder:
    """A loaded WavLM and how its input must be prepared."""

    model: WavLMModel
    normalize_waveform: bool
    """Official ``cfg.normalize``: ``F.layer_norm`` over the whole 16 kHz waveform before the model."""
    source: str

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)


# ---------------------------------------------------------------------------------------------------------------
# unilm checkpoint -> transformers layout


def parse_conv_layers(spec: str) -> list[tuple[int, int, int]]:
    """Parse unilm's ``conv_feature_layers`` string, e.g. ``"[(512,10,5)] + [(512,3,2)] * 4"``, without eval()."""

    def evaluate(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return evaluate(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            items = [evaluate(element) for element in node.elts]
            return items if isinstance(node, ast.List) else tuple(items)
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
            left, right = evaluate(node.left), evaluate(node.right)
            return left + right if isinstance(node.op, ast.Add) else left * right
        raise ValueError(f"unsupported element {ast.dump(node)}")

    try:
        layers = evaluate(ast.parse(spec, mode="eval"))
        if not layers or not all(isinstance(t, tuple) and len(t) == 3 for t in layers):
            raise ValueError("expected a list of (dim, kernel, stride) tuples")
    except (SyntaxError, ValueError, TypeError) as exc:
        raise WeightsError(f"WavLM cfg 'conv_feature_layers' = {spec!r} cannot be read: {exc}.") from exc
    return [tuple(int(v) for v in layer) for layer in layers]


def wavlm_config_from_unilm(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A ``transformers.WavLMConfig`` dict equivalent to a unilm ``WavLMConfig`` dict (WavLM-Large's flags)."""
    if not cfg.get("relative_position_embedding", False) or not cfg.get("gru_rel_pos", False):
        raise WeightsError("This WavLM checkpoint has relative_position_embedding/gru_rel_pos switched off; "
                           "transformers' WavLM (and every released WavLM) needs both. Use WavLM-Large.pt.")
    activation = str(cfg.get("activation_fn", "gelu"))
    if activation not in _UNILM_ACTIVATIONS:
        raise WeightsError(f"WavLM activation_fn={activation!r} has no transformers equivalent.")
    layers = parse_conv_layers(str(cfg.get("conv_feature_layers", "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2")))
    mask_prob = float(cfg.get("mask_prob", 0.65))
    return {
        "architectures": ["WavLMModel"],
        "model_type": "wavlm",
        "hidden_size": int(cfg.get("encoder_embed_dim", 768)),
        "num_hidden_layers": int(cfg.get("encoder_layers", 12)),
        "num_attention_heads": int(cfg.get("encoder_attention_heads", 12)),
        "intermediate_size": int(cfg.get("encoder_ffn_embed_dim", 3072)),
        "hidden_act": _UNILM_ACTIVATIONS[activation],
        "conv_dim": [layer[0] for layer in layers],
        "conv_kernel": [layer[1] for layer in layers],
        "conv_stride": [layer[2] for layer in layers],
        "conv_bias": bool(cfg.get("conv_bias", False)),
        "feat_extract_norm": "layer" if cfg.get("extractor_mode", "default") == "layer_norm" else "group",
        "feat_extract_activation": "gelu",
        "do_stable_layer_norm": bool(cfg.get("layer_norm_first", False)),
        "num_conv_pos_embeddings": int(cfg.get("conv_pos", 128)),
        "num_conv_pos_embedding_groups": int(cfg.get("conv_pos_groups", 16)),
        "num_buckets": int(cfg.get("num_buckets", 320)),
        "max_bucket_distance": int(cfg.get("max_distance", 1280)),
        "layer_norm_eps": 1e-5,
        "hidden_dropout": float(cfg.get("dropout", 0.1)),
        "attention_dropout": float(cfg.get("attention_dropout", 0.1)),
        "activation_dropout": float(cfg.get("activation_dropout", 0.0)),
        "feat_proj_dropout": float(cfg.get("dropout_input", 0.0)),
        "layerdrop": float(cfg.get("encoder_layerdrop", 0.0)),
        "mask_time_prob": mask_prob,
        "mask_time_length": int(cfg.get("mask_length", 10)),
        "mask_feature_prob": float(cfg.get("mask_channel_prob", 0.0)),
        "mask_feature_length": int(cfg.get("mask_channel_length", 10)),
        NORMALIZE_CONFIG_KEY: bool(cfg.get("normalize", False)),
    }


# (unilm pattern, transformers replacement); applied with re.fullmatch, first match wins
_KEY_MAP: tuple[tuple[str, str], ...] = (
    (r"mask_emb", r"masked_spec_embed"),
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", r"feature_extractor.conv_layers.\1.conv.\2"),
    # extractor_mode="layer_norm": Sequential(TransposeLast, Fp32LayerNorm, TransposeLast) at index 2
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.1\.(weight|bias)", r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    # extractor_mode="default": Fp32GroupNorm at index 2 of the first block only
    (r"feature_extractor\.conv_layers\.0\.2\.(weight|bias)", r"feature_extractor.conv_layers.0.layer_norm.\1"),
    (r"layer_norm\.(weight|bias)", r"feature_projection.layer_norm.\1"),
    (r"post_extract_proj\.(weight|bias)", r"feature_projection.projection.\1"),
    (r"encoder\.pos_conv\.0\.(weight_g|weight_v|bias)", r"encoder.pos_conv_embed.conv.\1"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
    (r"encoder\.layers\.(\d+)\.self_attn\.([qkv]_proj|out_proj)\.(weight|bias)", r"encoder.layers.\1.attention.\2.\3"),
    (r"encoder\.layers\.(\d+)\.self_attn\.grep_linear\.(weight|bias)",
     r"encoder.layers.\1.attention.gru_rel_pos_linear.\2"),
    (r"encoder\.layers\.(\d+)\.self_attn\.grep_a", r"encoder.layers.\1.attention.gru_rel_pos_const"),
    (r"encoder\.layers\.(\d+)\.self_attn\.relative_attention_bias\.weight",
     r"encoder.layers.\1.attention.rel_attn_embed.weight"),
    (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"encoder.layers.\1.layer_norm.\2"),
    (r"encoder\.layers\.(\d+)\.fc1\.(weight|bias)", r"encoder.layers.\1.feed_forward.intermediate_dense.\2"),
    (r"encoder\.layers\.(\d+)\.fc2\.(weight|bias)", r"encoder.layers.\1.feed_forward.output_dense.\2"),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"encoder.layers.\1.final_layer_norm.\2"),
)


def _rename_unilm_key(key: str) -> Optional[str]:
    for pattern, replacement in _KEY_MAP:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, replacement, key)
    return None


def convert_unilm_wavlm(
    ckpt_state: Mapping[str, torch.Tensor], cfg: Mapping[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """unilm ``WavLM`` state dict + cfg -> (transformers ``WavLMModel`` state dict, its config dict).

    The positional conv keeps the hub's legacy ``weight_g``/``weight_v`` names (as in microsoft/wavlm-large);
    :func:`build_wavlm` adapts them to torch's parametrization names when needed. Without ``post_extract_proj``
    (conv dim == encoder dim) the projection becomes an exact identity.
    """
    config = wavlm_config_from_unilm(cfg)
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in ckpt_state.items():
        new_key = _rename_unilm_key(key)
        if new_key is None:
            unknown.append(key)
        else:
            converted[new_key] = value
    if unknown:
        raise WeightsError(f"WavLM checkpoint has keys the unilm->transformers map does not know: {unknown[:8]}. "
                           "Is it a microsoft/unilm WavLM checkpoint (WavLM-Large.pt)?")
    if "feature_projection.projection.weight" not in converted:
        width = config["conv_dim"][-1]
        if width != config["hidden_size"]:
            raise WeightsError("WavLM checkpoint lacks post_extract_proj although conv dim != encoder dim.")
        converted["feature_projection.projection.weight"] = torch.eye(width)
        converted["feature_projection.projection.bias"] = torch.zeros(width)
    if config["mask_time_prob"] <= 0 and config["mask_feature_prob"] <= 0:
        converted.pop("masked_spec_embed", None)  # transformers builds no mask embedding then
    return converted, config


# ---------------------------------------------------------------------------------------------------------------
# loading


def build_wavlm(
    hf_state: Mapping[str, torch.Tensor], hf_config: Mapping[str, Any], source: str,
    normalize_waveform: Optional[bool] = None,
) -> WavLMEncoder:
    """Build a ``WavLMModel`` from a config dict and load ``hf_state`` strictly (eval mode, float32, CPU)."""
    from transformers import WavLMConfig, WavLMModel

    config = WavLMConfig(**{k: v for k, v in hf_config.items() if k not in ("model_type", "transformers_version")})
    model = WavLMModel(config)
    strict_load(model, _match_weight_norm_names(hf_state, model.state_dict().keys()), COMPONENT_WAVLM, source)
    if normalize_waveform is None:
        normalize_waveform = bool(hf_config.get(NORMALIZE_CONFIG_KEY, True))
    return WavLMEncoder(_prepared(model), normalize_waveform, source)


def encoder_from_model(model: WavLMModel, normalize_waveform: bool = True, source: str = "WavLMModel") -> WavLMEncoder:
    """Wrap an already built transformers WavLMModel (default: WavLM-Large's official whole-clip normalisation)."""
    return WavLMEncoder(_prepared(model), normalize_waveform, source)


def _prepared(model: WavLMModel) -> WavLMModel:
    """Eval mode, the CPU bf16 positional-conv workaround (:func:`_positional_conv_float32_on_cpu`) and attention
    in blocks of query rows (:func:`_attention_in_row_blocks`) on every layer of this model instance."""
    conv = model.encoder.pos_conv_embed.conv
    if not getattr(conv, "_mmgt_float32_hook", False):
        conv.register_forward_hook(_positional_conv_float32_on_cpu)
        conv._mmgt_float32_hook = True
    for layer in model.encoder.layers:
        layer.attention.forward = MethodType(_attention_in_row_blocks, layer.attention)
    return model.eval()


def _attention_in_row_blocks(self: Any, hidden_states: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                             position_bias: Optional[torch.Tensor] = None, **_kwargs: Any,
                             ) -> tuple[torch.Tensor, None, torch.Tensor]:
    """``WavLMAttention.forward`` with the same arithmetic, a block of query rows at a time.

    transformers builds the gated relative-position bias and the attention weights as whole ``heads x T x T``
    tensors (WavLM-Large on one 30 s chunk: 16 x 1500 x 1500, 144 MB each in float32, several alive at once).
    Here the bias is one row per key-minus-query offset, ``(2T - 1, heads)``, passed from the first layer to the
    others in place of the full bias, and each block of rows builds only its own bias, scores and softmax
    (:data:`ATTENTION_BLOCK_ELEMENTS` scores). Per row the operations are those of
    ``F.multi_head_attention_forward`` (``baddbmm`` with the gated bias, softmax, ``bmm``), so the output matches
    to rounding (inference only: no padding mask, no dropout, no attention weights returned).
    """
    if attention_mask is not None:
        raise ValueError("MMGT's WavLM attention runs one unpadded clip at a time and takes no attention mask")
    batch, length, _ = hidden_states.shape
    heads, head_dim = self.num_heads, self.head_dim
    if position_bias is None:  # first layer: the bias depends only on the key - query offset
        offsets = torch.arange(1 - length, length, device=hidden_states.device)
        position_bias = self.rel_attn_embed(self._relative_positions_bucket(offsets))

    def by_head(states: torch.Tensor) -> torch.Tensor:  # (batch, T, heads * head_dim) -> (batch * heads, T, head_dim)
        return states.view(batch, length, heads, head_dim).transpose(1, 2).reshape(batch * heads, length, head_dim)

    gate_input = hidden_states.view(batch, length, heads, head_dim).permute(0, 2, 1, 3)
    projected = self.gru_rel_pos_linear(gate_input).view(batch, heads, length, 2, 4).sum(-1)
    gate_a, gate_b = torch.sigmoid(projected).chunk(2, dim=-1)
    gate = (gate_a * (gate_b * self.gru_rel_pos_const - 1.0) + 2.0).reshape(batch * heads, length, 1)
    query = by_head(self.q_proj(hidden_states)) * math.sqrt(1.0 / head_dim)
    key_t = by_head(self.k_proj(hidden_states)).transpose(1, 2)
    value = by_head(self.v_proj(hidden_states))
    output = torch.empty_like(query)
    rows = max(1, ATTENTION_BLOCK_ELEMENTS // (batch * heads * length))
    key_positions = torch.arange(length, device=hidden_states.device)
    for start in range(0, length, rows):
        stop = min(start + rows, length)
        offset_rows = key_positions[None, :] - key_positions[start:stop, None] + (length - 1)
        bias = position_bias[offset_rows].permute(2, 0, 1).repeat(batch, 1, 1)  # (batch * heads, rows, T)
        scores = torch.baddbmm(gate[:, start:stop] * bias, query[:, start:stop], key_t)
        output[:, start:stop] = torch.bmm(scores.softmax(dim=-1), value)
    output = output.view(batch, heads, length, head_dim).transpose(1, 2).reshape(batch, length, heads * head_dim)
    return self.out_proj(output), None, position_bias


def _positional_conv_float32_on_cpu(conv: torch.nn.Conv1d, inputs: tuple[torch.Tensor, ...],
                                    output: torch.Tensor) -> Optional[torch.Tensor]:
    """Recompute the grouped positional conv in float32 for reduced precision on CPU.

    torch 2.13 CPU (oneDNN) returns wrong bf16 results for grouped Conv1d with few channels per group and a long
    kernel (2-4 channels/group, kernel 64-128: relative error ~1, measured), e.g. the tiny WavLM's positional conv.
    WavLM-Large (64 channels/group) measured fine, but the check is cheap next to the transformer layers.
    """
    hidden = inputs[0]
    if hidden.device.type != "cpu" or hidden.dtype == torch.float32:
        return None
    bias = None if conv.bias is None else conv.bias.float()
    exact = F.conv1d(hidden.float(), conv.weight.float(), bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return exact.to(output.dtype)


def _match_weight_norm_names(state: Mapping[str, torch.Tensor], model_keys: Any) -> dict[str, torch.Tensor]:
    """Rename ``weight_g``/``weight_v`` <-> ``parametrizations.weight.original0/1`` to what the model expects."""
    legacy = {".weight_g": ".parametrizations.weight.original0", ".weight_v": ".parametrizations.weight.original1"}
    wanted = set(model_keys)
    renamed = {}
    for key, value in state.items():
        for old, new in legacy.items():
            if key.endswith(old) and key not in wanted and key[: -len(old)] + new in wanted:
                key = key[: -len(old)] + new
            elif key.endswith(new) and key not in wanted and key[: -len(new)] + old in wanted:
                key = key[: -len(new)] + old
        renamed[key] = value
    return renamed


def wavlm_from_unilm(
    ckpt_state: Mapping[str, torch.Tensor], cfg: Mapping[str, Any], source: str
) -> WavLMEncoder:
    """Build a transformers WavLM from an official unilm state dict and cfg."""
    hf_state, hf_config = convert_unilm_wavlm(ckpt_state, cfg)
    return build_wavlm(hf_state, hf_config, source)


def load_wavlm(
    path: Union[str, Path],
    device: Union[str, torch.device] = "cpu",
    dtype: torch.dtype = torch.float32,
    unilm_cfg: Optional[Union[Mapping[str, Any], str, Path]] = None,
) -> WavLMEncoder:
    """Load WavLM from a Hugging Face folder, an official unilm ``.pt``, or a ``.safetensors`` file.

    ``unilm_cfg`` (dict or JSON path) is needed only for a unilm-layout ``.safetensors`` without our metadata.
    """
    file = Path(path)
    if file.is_dir():
        encoder = _load_hf_folder(file)
    else:
        state, metadata = load_weights(file)
        encoder = _encoder_from_weights(state, metadata, file, unilm_cfg)
    encoder.model.to(device=device, dtype=dtype)
    return encoder


def _encoder_from_weights(
    state: Mapping[str, torch.Tensor], metadata: Mapping[str, str], file: Path,
    unilm_cfg: Optional[Union[Mapping[str, Any], str, Path]],
) -> WavLMEncoder:
    component = metadata.get("mmgt_component")
    if component == COMPONENT_WAVLM:
        return build_wavlm(state, read_config(metadata), file.name)
    if not any(key.startswith("encoder.pos_conv.0.") for key in state):
        raise WeightsError(f"'{file.name}' is not a WavLM checkpoint this pack can read (component "
                           f"{component or 'unknown'}). Use the official WavLM-Large.pt, a converted "
                           "wavlm .safetensors, or a Hugging Face WavLM folder.")
    if component == COMPONENT_WAVLM_UNILM and metadata.get("mmgt_config"):
        cfg: Mapping[str, Any] = read_config(metadata)
    elif unilm_cfg is not None:
        cfg = unilm_cfg if isinstance(unilm_cfg, Mapping) else json.loads(Path(unilm_cfg).read_text())
    else:
        raise WeightsError(f"'{file.name}' holds unilm WavLM weights without their cfg. Use the official "
                           "WavLM-Large.pt (it carries the cfg), or pass the cfg JSON.")
    return wavlm_from_unilm(state, cfg, file.name)


def _load_hf_folder(folder: Path) -> WavLMEncoder:
    from transformers import WavLMModel

    from mmgt_core.pretrained import load_pretrained

    model = load_pretrained(WavLMModel, folder, "WavLM folder", kind="wavlm",
                            may_lack=lambda key: "masked_spec_embed" in key)  # SpecAugment, training only
    return WavLMEncoder(_prepared(model), _folder_normalize_flag(folder, model), folder.name)


def _folder_normalize_flag(folder: Path, model: WavLMModel) -> bool:
    """Our config key, else the preprocessor's ``do_normalize``, else True (WavLM-Large's official cfg)."""
    if hasattr(model.config, NORMALIZE_CONFIG_KEY):
        return bool(getattr(model.config, NORMALIZE_CONFIG_KEY))
    preprocessor = folder / "preprocessor_config.json"
    if preprocessor.is_file():
        return bool(json.loads(preprocessor.read_text()).get("do_normalize", True))
    return True


def export_wavlm_safetensors(source: Union[str, Path], out_path: Union[str, Path],
                             unilm_cfg: Optional[Union[Mapping[str, Any], str, Path]] = None) -> Path:
    """Convert an official unilm WavLM checkpoint to our transformers-layout ``.safetensors`` (component wavlm)."""
    file = Path(source)
    state, metadata = load_weights(file)
    encoder = _encoder_from_weights(state, metadata, file, unilm_cfg)  # verifies the conversion loads strictly
    hf_state = _match_weight_norm_names(encoder.model.state_dict(), _legacy_names(encoder.model.state_dict()))
    config = encoder.model.config.to_dict()
    config[NORMALIZE_CONFIG_KEY] = encoder.normalize_waveform
    return save_weights(hf_state, out_path, COMPONENT_WAVLM, config, file.name)


def _legacy_names(state: Mapping[str, torch.Tensor]) -> set[str]:
    """The hub's ``weight_g``/``weight_v`` spelling of every key."""
    return {k.replace(".parametrizations.weight.original0", ".weight_g")
            .replace(".parametrizations.weight.original1", ".weight_v") for k in state}


# ---------------------------------------------------------------------------------------------------------------
# features


@dataclass(frozen=True)
class Chunk:
    """One model call: samples ``[sample_start, sample_end)``; keep its frames ``[keep_from, keep_from+keep_count)``."""

    sample_start: int
    sample_end: int
    keep_from: int
    keep_count: int


def plan_chunks(num_samples: int, config: Any, chunk_frames: int, context_frames: int) -> list[Chunk]:
    """Cut a clip into chunks aligned to the CNN frame grid (one chunk when it fits in ``chunk_frames``)."""
    total = conv_frames(num_samples, config)
    if total <= chunk_frames:
        return [Chunk(0, num_samples, 0, total)]
    field, stride = conv_geometry(config)
    chunks = []
    for first in range(0, total, chunk_frames):
        last = min(first + chunk_frames, total)
        start_frame = max(0, first - context_frames)
        end_frame = min(total, last + context_frames)
        sample_end = min(num_samples, (end_frame - 1) * stride + field)
        chunks.append(Chunk(start_frame * stride, sample_end, first - start_frame, last - first))
    return chunks


def plan_chunks_seconds(config: Any, num_samples: int, chunk_seconds: float, context_seconds: float) -> list[Chunk]:
    """:func:`plan_chunks` with the chunk and context lengths given in seconds of audio."""
    frame_rate = ENCODER_SAMPLE_RATE / conv_geometry(config)[1]
    chunk_frames = max(1, round(chunk_seconds * frame_rate))
    return plan_chunks(num_samples, config, chunk_frames, max(0, round(context_seconds * frame_rate)))


def wavlm_last_layer(
    encoder: WavLMEncoder,
    wave16k: WaveformLike,
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    context_seconds: float = DEFAULT_CONTEXT_SECONDS,
    progress: OptionalProgress = None,
    check_cancel: OptionalCancel = None,
) -> torch.Tensor:
    """Final WavLM layer at 50 Hz, ``(frames, hidden)`` float32 on CPU, for a mono 16 kHz clip.

    Runs on the model's own device and dtype. ``progress(i, n)`` is called after each chunk.
    """
    wave = to_mono(wave16k)
    validate_clip(wave, ENCODER_SAMPLE_RATE)
    if encoder.normalize_waveform:
        wave = F.layer_norm(wave[None], wave[None].shape)[0]  # official: over the whole clip, eps 1e-5
    model = encoder.model
    parameter = next(model.parameters())
    chunks = plan_chunks_seconds(model.config, wave.shape[0], chunk_seconds, context_seconds)
    pieces = []
    for index, chunk in enumerate(chunks):
        if check_cancel is not None:
            check_cancel()
        segment = wave[chunk.sample_start:chunk.sample_end].to(device=parameter.device, dtype=parameter.dtype)
        with torch.inference_mode():
            hidden = model(segment[None]).last_hidden_state[0]
        pieces.append(hidden[chunk.keep_from:chunk.keep_from + chunk.keep_count].float().cpu())
        if progress is not None:
            progress(index + 1, len(chunks))
    return torch.cat(pieces, dim=0)


def to_25fps(frames50: torch.Tensor) -> torch.Tensor:
    """Official 50 Hz -> 25 fps: repeat the last frame, then linear interpolation to ``ceil(n/2)`` (align_corners)."""
    padded = torch.cat([frames50, frames50[-1:]], dim=0)
    size = math.ceil(padded.shape[0] / 2)
    return F.interpolate(padded.T[None], size=size, mode="linear", align_corners=True)[0].T


def wavlm_features(
    encoder: WavLMEncoder,
    wave16k: WaveformLike,
    n_frames: Optional[int] = None,
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    context_seconds: float = DEFAULT_CONTEXT_SECONDS,
    progress: OptionalProgress = None,
    check_cancel: OptionalCancel = None,
) -> torch.Tensor:
    """WavLM last layer at 25 fps, ``(n_frames, hidden)`` float32, of a mono 16 kHz clip.

    ``n_frames`` defaults to ``frame_count(samples, 16000)``; the official 50->25 step gives ``ceil((n50+1)/2)``
    rows, which can differ by one, so rows are cut off the end or the last row is repeated (``timeline.fit_length``).
    """
    wave = to_mono(wave16k)
    if n_frames is None:
        n_frames = frame_count(wave.shape[0])
    frames50 = wavlm_last_layer(encoder, wave, chunk_seconds, context_seconds, progress, check_cancel)
    return fit_length(to_25fps(frames50), n_frames)
