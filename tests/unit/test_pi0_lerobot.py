"""LeRobot's π0 checkpoint layout: a tiny folder written here as LeRobot lays it out (key names from LeRobot's
``modeling_pi0.py`` / ``pi_gemma.py`` / processor files at 7427f31, built with transformers' PaliGemma and Gemma
classes), loaded by vlarl and checked against a plain loop of LeRobot's joint-attention forward."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from torch import nn
from transformers import (
    GemmaConfig,
    GemmaForCausalLM,
    PaliGemmaConfig,
    PaliGemmaForConditionalGeneration,
    PreTrainedTokenizerFast,
)
from transformers.models.gemma.modeling_gemma import apply_rotary_pos_emb

from tests.unit.chunk_obs import INSTRUCTIONS, observations
from vlarl.config import load_config
from vlarl.policies import make_policy
from vlarl.policies.base import GREEDY, Sampling
from vlarl.policies.pi0 import Pi0Policy
from vlarl.policies.pi0.lerobot import load_lerobot
from vlarl.policies.pi0.paligemma import PaliGemmaVLA

A, P, MAX_A, MAX_S, K, WIDTH = 4, 4, 6, 5, 3, 32
TEXT = dict(
    model_type="gemma",
    vocab_size=300,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=32,
)
VISION = dict(
    model_type="siglip_vision_model",
    hidden_size=144,  # 2 heads of 72, So400m's head width
    intermediate_size=96,
    num_hidden_layers=1,
    num_attention_heads=2,
    patch_size=14,
    image_size=28,
    vision_use_head=False,
)


def _randomise(module: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    for p in module.parameters():
        p.data = torch.randn(p.shape, generator=gen) * 0.2
    return module


def _tokenizer() -> PreTrainedTokenizerFast:
    words = sorted({w for text in INSTRUCTIONS for w in text.split()})
    vocab = {"<pad>": 0, "<bos>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", pad_token="<pad>", unk_token="<unk>")


def _lerobot_modules():
    pali = _randomise(
        PaliGemmaForConditionalGeneration(PaliGemmaConfig(text_config=TEXT, vision_config=VISION, projection_dim=64)), 1
    )
    expert_cfg = GemmaConfig(**{**TEXT, "hidden_size": WIDTH, "intermediate_size": 48})
    expert = _randomise(GemmaForCausalLM(expert_cfg), 2)
    heads = {
        "action_in_proj": nn.Linear(MAX_A, WIDTH),
        "action_out_proj": nn.Linear(WIDTH, MAX_A),
        "state_proj": nn.Linear(MAX_S, WIDTH),
        "action_time_mlp_in": nn.Linear(2 * WIDTH, WIDTH),
        "action_time_mlp_out": nn.Linear(WIDTH, WIDTH),
    }
    return pali.eval(), expert.eval(), {k: _randomise(m, 3 + i) for i, (k, m) in enumerate(heads.items())}


def write_lerobot_folder(path, config=None):
    """A LeRobot pi0 folder: config.json, model.safetensors (the prompt embedding only as the tied lm_head, as
    LeRobot's fix-up handles), the preprocessor's MEAN_STD statistics and a PaliGemma-style tokenizer."""
    pali, expert, heads = _lerobot_modules()
    tensors = {}
    for k, v in pali.state_dict().items():
        if k != "model.language_model.embed_tokens.weight":  # LeRobot's transformers nests SigLIP in vision_model
            k = k.replace("model.vision_tower.", "model.vision_tower.vision_model.")
            tensors[f"model.paligemma_with_expert.paligemma.{k}"] = v
    for k, v in expert.state_dict().items():
        if k != "model.embed_tokens.weight":  # LeRobot sets gemma_expert.model.embed_tokens = None
            tensors[f"model.paligemma_with_expert.gemma_expert.{k}"] = v
    for name, module in heads.items():
        tensors |= {f"model.{name}.{k}": v for k, v in module.state_dict().items()}
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, path / "model.safetensors")
    stats = {
        "observation.state.mean": torch.linspace(-1, 1, MAX_S),
        "observation.state.std": torch.linspace(0.5, 2, MAX_S),
        "action.mean": torch.linspace(0.1, 0.6, MAX_A),
        "action.std": torch.linspace(0.2, 1.2, MAX_A),
    }
    save_file(stats, path / "policy_preprocessor_step_5_normalizer_processor.safetensors")
    steps = [
        {
            "registry_name": "normalizer_processor",
            "state_file": "policy_preprocessor_step_5_normalizer_processor.safetensors",
        }
    ]
    (path / "policy_preprocessor.json").write_text(json.dumps({"name": "policy_preprocessor", "steps": steps}))
    config = config or {
        "type": "pi0",
        "paligemma_variant": "gemma_2b",
        "action_expert_variant": "gemma_300m",
        "chunk_size": K,
        "n_action_steps": K,
        "max_state_dim": MAX_S,
        "max_action_dim": MAX_A,
        "num_inference_steps": 3,
        "min_period": 4e-3,
        "max_period": 4.0,
        "tokenizer_max_length": 48,
    }
    (path / "config.json").write_text(json.dumps(config))
    _tokenizer().save_pretrained(str(path))
    return pali, expert, heads


def lerobot_velocity(pali, expert, heads, pixels, ids, lang_mask, state, x_t, time):
    """LeRobot's ``PI0Pytorch`` training forward, one velocity: prefix [images, prompt] and suffix [state, K actions]
    through both towers layer by layer with one joint attention (``compute_layer_complete``), as a plain loop."""
    img = pali.model.get_image_features(pixels).pooler_output
    lang = pali.model.language_model.embed_tokens(ids)
    b, w = len(ids), WIDTH
    fraction = torch.linspace(0.0, 1.0, w // 2, dtype=torch.float64)
    period = 4e-3 * (4.0 / 4e-3) ** fraction
    angle = (1.0 / period * 2 * math.pi)[None, :] * time.double()[:, None]
    temb = torch.cat([angle.sin(), angle.cos()], 1).float()
    act = heads["action_in_proj"](x_t)
    mixed = torch.cat([act, temb[:, None].expand_as(act)], 2)
    act_tokens = heads["action_time_mlp_out"](torch.nn.functional.silu(heads["action_time_mlp_in"](mixed)))
    streams = [torch.cat([img, lang], 1), torch.cat([heads["state_proj"](state)[:, None], act_tokens], 1)]
    pad = torch.cat(
        [torch.ones(b, img.shape[1], dtype=torch.bool), lang_mask.bool(), torch.ones(b, 1 + K, dtype=torch.bool)], 1
    )
    att = torch.tensor([0] * (img.shape[1] + ids.shape[1]) + [1, 1] + [0] * (K - 1))
    cum = att.cumsum(0)
    allowed = (cum[None, :] <= cum[:, None])[None] & pad[:, None, :] & pad[:, :, None]
    positions = pad.long().cumsum(1) - 1
    towers = (pali.model.language_model, expert.model)
    for layers in zip(towers[0].layers, towers[1].layers):
        qs, ks, vs = [], [], []
        for layer, h in zip(layers, streams):
            n = layer.input_layernorm(h)
            shape = (b, h.shape[1], -1, 32)
            qs.append(layer.self_attn.q_proj(n).view(shape).transpose(1, 2))
            ks.append(layer.self_attn.k_proj(n).view(shape).transpose(1, 2))
            vs.append(layer.self_attn.v_proj(n).view(shape).transpose(1, 2))
        q, k, v = torch.cat(qs, 2), torch.cat(ks, 2), torch.cat(vs, 2)
        cos, sin = towers[0].rotary_emb(q, positions)
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        scores = q @ k.transpose(-1, -2) * 32**-0.5
        scores = scores + torch.where(allowed[:, None], 0.0, -2.3819763e38)  # LeRobot's prepare_attention_masks_4d
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(b, q.shape[2], -1)
        new, start = [], 0
        for layer, h in zip(layers, streams):
            h = h + layer.self_attn.o_proj(out[:, start : start + h.shape[1]])
            new.append(h + layer.mlp(layer.post_attention_layernorm(h)))
            start += h.shape[1]
        streams = new
    return heads["action_out_proj"](towers[1].norm(streams[1])[:, -K:])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("lerobot_pi0")
    return path, write_lerobot_folder(path)


def _load(path, **options):
    return load_lerobot(path, A, P, **options).eval()


def test_loaded_expert_on_the_paligemma_cache_equals_lerobots_joint_forward(folder):
    """Our cached prefix (PaliGemma's per-layer keys/values, left-padded prompts) + the expert's suffix pass gives
    LeRobot's joint-attention velocity (right-padded prompts; state and actions zero-padded to 5 and 6 dims)."""
    path, (pali, expert, heads) = folder
    policy = _load(path)
    assert isinstance(policy.model, PaliGemmaVLA) and policy.expert.prefix_proj is None
    obs = observations()
    inputs = policy.prepare(obs)
    assert len(set(inputs["attention_mask"].sum(1).tolist())) > 1  # prompts of different lengths
    gen = torch.Generator().manual_seed(0)
    x_t, time = torch.randn(3, K, A, generator=gen), torch.tensor([0.9, 0.5, 0.25])
    with torch.no_grad():
        ours = policy.expert(policy._prefix(inputs), x_t, time, inputs["state"])[0]
        lengths = inputs["attention_mask"].sum(1)
        right = torch.stack([row.roll(-int(len(row) - n)) for row, n in zip(inputs["input_ids"], lengths)])
        right_mask = torch.stack([mask.roll(-int(len(mask) - n)) for mask, n in zip(inputs["attention_mask"], lengths)])
        state = torch.nn.functional.pad(inputs["state"], (0, MAX_S - P))
        reference = lerobot_velocity(
            pali,
            expert,
            heads,
            inputs["pixel_values"][:, 0],
            right,
            right_mask,
            state,
            torch.nn.functional.pad(x_t, (0, MAX_A - A)),
            time,
        )
    torch.testing.assert_close(ours, reference[..., :A], atol=1e-5, rtol=1e-4)
    # the state is MEAN_STD-normalised with the folder's statistics (first 4 of 5 dims)
    mean, std = torch.linspace(-1, 1, MAX_S)[:P], torch.linspace(0.5, 2, MAX_S)[:P]
    torch.testing.assert_close(inputs["state"], (torch.as_tensor(obs["proprio"]) - mean) / (std + 1e-8))


def test_loaded_policy_acts_unnormalises_and_scores_its_chain(folder):
    """Chunks [B, K, A] from the folder's chunk_size and denoising steps; env actions are LeRobot's inverse MEAN_STD
    of the ODE's output (not clipped); the learner's log-probs of the recorded chain equal the rollout's."""
    policy = _load(folder[0])
    assert policy.chunk_len == K and policy.denoise_steps == 3
    greedy = policy.act(observations(), GREEDY, torch.Generator().manual_seed(0))
    mean, std = np.linspace(0.1, 0.6, MAX_A)[:A], np.linspace(0.2, 1.2, MAX_A)[:A]
    normalised = greedy.chain[:, -1].numpy()
    np.testing.assert_allclose(greedy.actions, normalised * std + mean, rtol=1e-5, atol=1e-6)
    out = policy.act(observations(), Sampling(), torch.Generator().manual_seed(1))
    assert out.actions.shape == out.logprob.shape == (3, K, A) and out.value.shape == (3, K)
    logp, _, value = policy.evaluate(out.inputs, out.tokens, 1.0, out.chain)
    torch.testing.assert_close(logp, out.logprob, atol=1e-5, rtol=0)
    torch.testing.assert_close(value, out.value, atol=1e-5, rtol=0)


def test_save_writes_lerobots_layout_and_loads_back_identically(folder, tmp_path):
    policy = _load(folder[0], noise_method="flow_noise")
    policy.save(tmp_path / "out")
    names = load_file(tmp_path / "out" / "model.safetensors")
    assert "model.paligemma_with_expert.gemma_expert.model.layers.1.mlp.down_proj.weight" in names
    assert (
        "model.paligemma_with_expert.paligemma.model.vision_tower.vision_model.embeddings.patch_embedding.weight"
        in names
    )
    assert json.loads((tmp_path / "out" / "config.json").read_text())["type"] == "pi0"
    again = _load(tmp_path / "out", noise_method="flow_noise")
    for a, b in zip(policy.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    obs = observations()
    first = policy.act(obs, Sampling(), torch.Generator().manual_seed(3))
    second = again.act(obs, Sampling(), torch.Generator().manual_seed(3))
    assert np.array_equal(first.actions, second.actions)
    policy.value_head.mlp[0].weight.data.add_(1.0)
    again.load(tmp_path / "out")  # Pi0Policy.load reads the same layout back (the trainer's resume path)
    assert not torch.equal(again.value_head.mlp[0].weight, policy.value_head.mlp[0].weight)


def test_make_policy_builds_the_family_from_a_lerobot_folder(folder):
    path = folder[0]
    base = ["policy.family=pi0", f"policy.checkpoint={path}", f"policy.pi0.chunk_len={K}", "policy.use_proprio=true"]
    policy = make_policy(load_config("sft", overrides=base).policy, A, P)
    assert isinstance(policy, Pi0Policy) and isinstance(policy.model, PaliGemmaVLA)
    with pytest.raises(ValueError, match="denoises chunks of 3; policy.pi0.chunk_len=4"):
        make_policy(load_config("sft", overrides=base[:2]).policy, A, P)
    with pytest.raises(ValueError, match="holds a pi0 checkpoint; policy.family=openvla"):
        make_policy(load_config("sft", overrides=[f"policy.checkpoint={path}"]).policy, A, P)


def test_bad_folders_fail_at_load_naming_the_family_file_or_tensor(folder, tmp_path):
    path = folder[0]
    other = tmp_path / "pi05"
    write_lerobot_folder(other, {"type": "pi05", "chunk_size": K})
    with pytest.raises(ValueError, match="not a LeRobot pi0 checkpoint.*'pi05'"):
        load_lerobot(other, A, P)
    with pytest.raises(ValueError, match="takes actions of <= 6 and states of <= 5 dims; the env has 7 and 4"):
        load_lerobot(path, 7, P, chunk_len=K)
    missing = tmp_path / "missing"
    write_lerobot_folder(missing)
    (missing / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_lerobot(missing, A, P)
    untokenized = tmp_path / "untokenized"
    write_lerobot_folder(untokenized)
    for file in untokenized.glob("tokenizer*.json"):
        file.unlink()
    with pytest.raises(FileNotFoundError, match="paligemma-3b-pt-224"):
        load_lerobot(untokenized, A, P)
    bad = tmp_path / "bad"
    write_lerobot_folder(bad)
    tensors = load_file(bad / "model.safetensors")
    key = "model.paligemma_with_expert.gemma_expert.model.layers.0.mlp.up_proj.weight"
    tensors[key] = torch.zeros(49, WIDTH)
    save_file(tensors, bad / "model.safetensors")
    with pytest.raises(ValueError, match=r"layers\.0\.mlp\.up_proj\.weight: \[49, 32\], expected \[48, 32\]"):
        load_lerobot(bad, A, P)
