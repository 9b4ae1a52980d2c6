"""OpenVLA-layout checkpoints: file layout, timm parameter names, exact reload, unused tensors."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from vlarl.policies.base import GREEDY
from vlarl.policies.openvla.checkpoint import load_pretrained, save_pretrained
from vlarl.policies.openvla.factory import build_policy
from vlarl.policies.openvla.vision import VISION_TOWERS


def _obs():
    rng = np.random.default_rng(0)
    return {
        "image": rng.integers(0, 256, (2, 1, 64, 64, 3), dtype=np.uint8),
        "instruction": ["reach the goal position", "push the puck"],
    }


def _expected_tower_keys(timm_id):
    spec = VISION_TOWERS[timm_id]
    keys = {"patch_embed.proj.weight", "patch_embed.proj.bias", "pos_embed", "norm.weight", "norm.bias"}
    if spec.kind == "dinov2_reg":
        keys |= {"cls_token", "reg_token"}
    for i in range(spec.depth):
        for m in ("norm1", "norm2", "attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"):
            keys |= {f"blocks.{i}.{m}.weight", f"blocks.{i}.{m}.bias"}
        if spec.kind == "dinov2_reg":
            keys |= {f"blocks.{i}.ls1.scale_factor", f"blocks.{i}.ls2.scale_factor"}
    return keys


def _read_all(path):
    index = json.loads((path / "model.safetensors.index.json").read_text())
    tensors = {}
    for f in sorted(set(index["weight_map"].values())):
        tensors.update(load_file(path / f))
    return index, tensors


def _timm_reference(sd, timm_id, pixels):
    """A slow, explicit timm ViT forward: output of the second-to-last block without prefix tokens."""
    spec = VISION_TOWERS[timm_id]
    x = torch.nn.functional.conv2d(
        pixels, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=spec.patch
    )
    x = x.flatten(2).transpose(1, 2) + sd["pos_embed"]
    prefix = 0
    if spec.kind == "dinov2_reg":  # timm no_embed_class: [cls, registers, patches], prefix without position
        b = x.shape[0]
        x = torch.cat([sd["cls_token"].expand(b, -1, -1), sd["reg_token"].expand(b, -1, -1), x], dim=1)
        prefix = 1 + spec.registers
    d, h = spec.width, spec.heads

    def ln(t, name):
        return torch.nn.functional.layer_norm(t, (d,), sd[f"{name}.weight"], sd[f"{name}.bias"], eps=1e-6)

    for i in range(spec.depth - 1):
        p = f"blocks.{i}."
        y = ln(x, p + "norm1") @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]
        q, k, v = (t.reshape(x.shape[0], x.shape[1], h, d // h).transpose(1, 2) for t in y.chunk(3, dim=-1))
        att = ((q @ k.transpose(-1, -2)) / math.sqrt(d // h)).softmax(-1) @ v
        att = att.transpose(1, 2).reshape(x.shape) @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
        x = x + att * sd.get(p + "ls1.scale_factor", 1.0)
        m = torch.nn.functional.gelu(ln(x, p + "norm2") @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"])
        x = x + (m @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]) * sd.get(p + "ls2.scale_factor", 1.0)
    return x[:, prefix:]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    policy = build_policy("tiny-fused", 4).eval()
    with torch.no_grad():  # non-trivial layer scales and class-token position so the conversions matter
        for tower in (policy.model.vision_backbone.featurizer,):
            for layer in tower.model.encoder.layer:
                layer.layer_scale1.lambda1.uniform_(0.5, 1.5)
            tower.model.embeddings.position_embeddings[:, 0].normal_()
    path = tmp_path_factory.mktemp("ckpt") / "tiny-openvla"
    save_pretrained(policy, path, max_shard_bytes=4 * 2**20)
    return policy, path


def test_layout_and_names(saved):
    policy, path = saved
    index, tensors = _read_all(path)
    shards = sorted(p.name for p in path.glob("model-*.safetensors"))
    assert len(shards) > 1 and all(n.endswith(f"-of-{len(shards):05d}.safetensors") for n in shards)
    assert set(index["weight_map"]) == set(tensors)
    config = json.loads((path / "config.json").read_text())
    assert config["use_fused_vision_backbone"] is True
    assert config["timm_model_ids"] == ["vlarl_tiny_dinov2_p8", "vlarl_tiny_siglip_p8"]
    assert config["image_sizes"] == [64, 64] and config["n_action_bins"] == 256
    assert config["text_config"]["model_type"] == "llama"
    assert set(config["norm_stats"]["vlarl"]["action"]) == {"q01", "q99", "mask"}
    expected = {f"vision_backbone.featurizer.{k}" for k in _expected_tower_keys("vlarl_tiny_dinov2_p8")}
    expected |= {f"vision_backbone.fused_featurizer.{k}" for k in _expected_tower_keys("vlarl_tiny_siglip_p8")}
    expected |= {f"projector.fc{i}.{w}" for i in (1, 2, 3) for w in ("weight", "bias")}
    expected |= {f"language_model.{k}" for k in policy.model.language_model.state_dict()}
    assert set(tensors) == expected
    assert tensors["projector.fc1.weight"].shape == (4 * 256, 256)  # fused: 4x the fused vision width
    assert (path / "tokenizer.json").is_file() and (path / "vlarl_heads.safetensors").is_file()


def test_timm_tensors_reproduce_the_towers(saved):
    policy, path = saved
    _, tensors = _read_all(path)
    pixels = policy.model.vision_backbone.normalize(torch.as_tensor(_obs()["image"][:, 0]))
    for name, timm_id, channels in (
        ("featurizer", "vlarl_tiny_dinov2_p8", slice(0, 3)),
        ("fused_featurizer", "vlarl_tiny_siglip_p8", slice(3, 6)),
    ):
        prefix = f"vision_backbone.{name}."
        sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        ours = getattr(policy.model.vision_backbone, name)(pixels[:, channels])
        torch.testing.assert_close(ours, _timm_reference(sd, timm_id, pixels[:, channels]), atol=2e-5, rtol=1e-4)


def test_reload_reproduces_logits(saved):
    policy, path = saved
    loaded = load_pretrained(path).eval()
    out = policy.act(_obs(), GREEDY)
    a = policy.forward_tokens(out.inputs, out.tokens[:, 0])[0]
    b = loaded.forward_tokens(out.inputs, out.tokens[:, 0])[0]
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    for x, y in zip(policy.evaluate(out.inputs, out.tokens), loaded.evaluate(out.inputs, out.tokens)):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=0)
    np.testing.assert_array_equal(loaded.norm_stats.q99, policy.norm_stats.q99)
    assert loaded.prompt == policy.prompt and len(loaded.tokenizer) == len(policy.tokenizer)


def test_unused_tensors_survive_a_round_trip_and_strays_fail(saved, tmp_path):
    policy, path = saved
    _, tensors = _read_all(path)
    head = torch.randn(1, 1, 128)  # e.g. SigLIP's attention-pool latent, stored but unused by OpenVLA
    tensors["vision_backbone.fused_featurizer.attn_pool.latent"] = head
    single = tmp_path / "single"
    single.mkdir()
    save_file(tensors, single / "model.safetensors")
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (single / f).write_bytes((path / f).read_bytes())
    loaded = load_pretrained(single)
    save_pretrained(loaded, tmp_path / "again")
    again = load_file(tmp_path / "again" / "model.safetensors")
    assert torch.equal(again["vision_backbone.fused_featurizer.attn_pool.latent"], head)
    tensors["something.else"] = head.clone()
    save_file(tensors, single / "model.safetensors")
    with pytest.raises(ValueError, match="unexpected tensors"):
        load_pretrained(single)
    del tensors["something.else"], tensors["projector.fc3.bias"]
    save_file(tensors, single / "model.safetensors")
    with pytest.raises(ValueError, match="projector: missing"):
        load_pretrained(single)


def test_only_safetensors_are_loaded(saved, tmp_path):
    _, path = saved
    (tmp_path / "config.json").write_bytes((path / "config.json").read_bytes())
    torch.save({"x": torch.zeros(1)}, tmp_path / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="only safetensors"):
        load_pretrained(tmp_path)


def test_openvla_checkpoint_without_vlarl_metadata_uses_the_base_vocabulary(saved, tmp_path):
    """OpenVLA's Llama tokenizer has 32000 base tokens plus an added <PAD>; actions end below the pad."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    _, path = saved
    target = tmp_path / "openvla-like"
    target.mkdir()
    for f in path.glob("model*"):
        (target / f.name).write_bytes(f.read_bytes())
    config = json.loads((path / "config.json").read_text())
    config.pop("vlarl")
    (target / "config.json").write_text(json.dumps(config))
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, 500)}}
    base = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    base.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=base, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tok.add_special_tokens({"pad_token": "<PAD>"})
    tok.save_pretrained(str(target))
    policy = load_pretrained(target)
    assert len(policy.tokenizer) == 501 and policy.tokenizer.pad_token_id == 500
    assert policy.action_tokenizer.vocab_size == 500 and policy.action_tokenizer.first_id == 244
    assert policy.critic is None and policy.model.config.prompt_suffix_id is None


def test_vlarl_checkpoint_without_action_vocab_key_keeps_its_action_ids(saved, tmp_path):
    """Checkpoints written before `action_vocab_size` was recorded end their vocabulary with the actions."""
    policy, path = saved
    target = tmp_path / "older"
    target.mkdir()
    for f in path.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    config = json.loads((path / "config.json").read_text())
    del config["vlarl"]["action_vocab_size"]
    (target / "config.json").write_text(json.dumps(config))
    loaded = load_pretrained(target)
    assert loaded.action_tokenizer.first_id == policy.action_tokenizer.first_id == len(policy.tokenizer) - 256


def test_a_folder_without_tokenizer_files_fails_instead_of_prompting(tmp_path):
    from vlarl.policies.openvla.text_tokenizer import load_tokenizer

    config = {"auto_map": {"AutoConfig": "configuration_prismatic.OpenVLAConfig"}, "model_type": "openvla"}
    (tmp_path / "config.json").write_text(json.dumps(config))  # transformers would ask to trust remote code
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        load_tokenizer(tmp_path)
