"""Stable Diffusion's components against the PyTorch references (diffusers, transformers), with
tiny random models: the cross-attention UNet (output and h), the autoencoder and CLIP."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dg_jax.convert.clip import load_clip, load_clip_text
from dg_jax.convert.stable_diffusion import load_unet_cond, load_vae, unet_cond_config_from_diffusers

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

UNET_CONFIGS = {
    "sd1": dict(  # 1x1 conv projections, one head count for every level
        block_out_channels=(8, 16, 16), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=12, attention_head_dim=2, norm_num_groups=4),
    "sd2": dict(  # linear projections, heads per level, upcast attention, 2 transformer layers
        block_out_channels=(8, 16), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=12,
        attention_head_dim=[2, 4], use_linear_projection=True, upcast_attention=True,
        transformer_layers_per_block=2, norm_num_groups=4),
}
TEXT = dict(vocab_size=100, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
            num_attention_heads=4, max_position_embeddings=12, eos_token_id=99, projection_dim=8)
# begin-of-text 98, end-of-text 99 (then padding: with 99 as SD's tokenizers do, or with 0)
IDS = np.array([[98, 5, 7, 99, 99, 99, 99], [98, 40, 30, 20, 10, 99, 0]])


def perturbed(model, seed: int = 0):
    """`model` (torch) in eval mode with every parameter moved off its init (norms included)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def nchw(x: np.ndarray):
    return torch.from_numpy(x.transpose(0, 3, 1, 2))


def nhwc(t) -> np.ndarray:
    return t.numpy().transpose(0, 2, 3, 1)


def max_err(ours, ref) -> float:
    return float(np.abs(np.asarray(ours) - np.asarray(ref)).max())


@nnx.jit  # one compilation instead of one per operation
def output_and_h(unet, x, t, context):
    enc = unet.encode(x, t, context)
    return unet.decode(*enc), enc.h


@pytest.mark.parametrize("name", UNET_CONFIGS)
def test_cross_attention_unet_output_and_h_match_diffusers(name, tmp_path):
    torch.manual_seed(0)
    model = perturbed(diffusers.UNet2DConditionModel(sample_size=16, **UNET_CONFIGS[name]))
    model.save_pretrained(tmp_path)
    ours = load_unet_cond(tmp_path)
    rng = np.random.RandomState(0)
    x = rng.randn(2, 16, 16, 4).astype(np.float32)
    context = rng.randn(2, 5, 12).astype(np.float32)
    t = np.array([3.0, 700.5])
    captured = {}
    hook = model.mid_block.register_forward_hook(lambda m, i, o: captured.update(h=o))
    with torch.no_grad():
        ref = model(nchw(x), torch.from_numpy(t), encoder_hidden_states=torch.from_numpy(context))
    hook.remove()
    out, h = output_and_h(ours, jnp.asarray(x), jnp.asarray(t), jnp.asarray(context))
    assert h.shape == (2, *ours.config.h_shape)
    assert max_err(out, nhwc(ref.sample)) <= 1e-4
    assert max_err(h, nhwc(captured["h"])) <= 1e-4
    with pytest.raises(ValueError, match="needs a context"):
        ours.encode(jnp.asarray(x), jnp.asarray(t))


@pytest.mark.parametrize("change, message", [
    (dict(addition_embed_type="text_time"), "addition_embed_type"),
    (dict(cross_attention_dim=[12, 12, 12]), "cross_attention_dim"),
    (dict(attention_head_dim=[2, 2]), "attention_head_dim"),
    (dict(down_block_types=("SimpleCrossAttnDownBlock2D", "DownBlock2D", "DownBlock2D")),
     "SimpleCrossAttnDownBlock2D"),
])
def test_unsupported_cross_attention_unet_options_name_the_problem(change, message):
    with pytest.raises(ValueError, match=message):
        unet_cond_config_from_diffusers(dict(sample_size=16, **(UNET_CONFIGS["sd1"] | change)))


def test_autoencoder_matches_diffusers(tmp_path):
    torch.manual_seed(0)
    model = perturbed(diffusers.AutoencoderKL(
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4,
        scaling_factor=0.5))
    model.save_pretrained(tmp_path)
    ours = load_vae(tmp_path)
    rng = np.random.RandomState(0)
    x = rng.randn(2, 16, 16, 3).astype(np.float32)
    z = rng.randn(2, 8, 8, 4).astype(np.float32)
    with torch.no_grad():
        dist = model.encode(nchw(x)).latent_dist
        decoded = model.decode(nchw(z)).sample
    mean, logvar = ours.encode(jnp.asarray(x))
    assert max_err(mean, nhwc(dist.mean)) <= 1e-4
    assert max_err(logvar, nhwc(dist.logvar)) <= 1e-4
    assert max_err(ours.decode(jnp.asarray(z)), nhwc(decoded)) <= 1e-4
    # the scaled round trip the pipelines use: latents = scaling_factor * z
    assert max_err(ours.images_to_latents(jnp.asarray(x)), 0.5 * nhwc(dist.mean)) <= 1e-4
    assert max_err(ours.latents_to_images(0.5 * jnp.asarray(z)), nhwc(decoded)) <= 1e-4


@pytest.mark.parametrize("act, cls", [("quick_gelu", "CLIPTextModel"),
                                      ("gelu", "CLIPTextModelWithProjection")])
def test_clip_text_matches_transformers(act, cls, tmp_path):
    torch.manual_seed(0)
    model = perturbed(getattr(transformers, cls)(transformers.CLIPTextConfig(hidden_act=act,
                                                                             **TEXT)))
    model.save_pretrained(tmp_path)
    ours = load_clip_text(tmp_path)
    with torch.no_grad():
        ref = model(torch.from_numpy(IDS))
    hidden, pooled = ours(jnp.asarray(IDS))
    assert max_err(hidden, ref.last_hidden_state) <= 1e-4
    ref_pooled = ref.text_embeds if cls.endswith("Projection") else ref.pooler_output
    assert pooled.shape == ref_pooled.shape and max_err(pooled, ref_pooled) <= 1e-4


def test_clip_model_logits_match_transformers(tmp_path):
    torch.manual_seed(0)
    vision = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=2,
                  num_attention_heads=4, image_size=32, patch_size=8)
    model = perturbed(transformers.CLIPModel(transformers.CLIPConfig(
        text_config=TEXT, vision_config=vision, projection_dim=8)))
    model.save_pretrained(tmp_path)
    ours = load_clip(tmp_path)
    pixels = np.random.RandomState(0).randn(3, 32, 32, 3).astype(np.float32)
    with torch.no_grad():
        ref = model(input_ids=torch.from_numpy(IDS), pixel_values=nchw(pixels))
    assert max_err(ours.logits(jnp.asarray(pixels), jnp.asarray(IDS)), ref.logits_per_image) <= 1e-4
    with pytest.raises(ValueError, match="32x32"):
        ours.image_embeds(jnp.zeros((1, 16, 16, 3)))


def test_zero_shot_labeller_is_clips_image_text_logits(tmp_path):
    """ZeroShotLabeller's logits per attribute are CLIPModel's logits_per_image for that
    attribute's class prompts (images already at CLIP's size: only the normalisation applies)."""
    from dg_jax.models.zero_shot import CLIP_MEAN, CLIP_STD, ZeroShotLabeller

    torch.manual_seed(0)
    vision = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                  num_attention_heads=4, image_size=32, patch_size=8)
    model = perturbed(transformers.CLIPModel(transformers.CLIPConfig(
        text_config=TEXT, vision_config=vision, projection_dim=8)))
    model.save_pretrained(tmp_path)
    prompts = {"a": IDS[:2], "b": np.concatenate([IDS, IDS[::-1]])[:3]}
    lookup = {f"prompt {i}": row for i, row in enumerate(np.concatenate(list(prompts.values())))}
    tokenizer = lambda texts: np.stack([lookup[t] for t in texts])  # noqa: E731
    names = iter(lookup)
    labeller = ZeroShotLabeller(load_clip(tmp_path), tokenizer,
                                {k: [next(names) for _ in v] for k, v in prompts.items()})
    assert labeller.num_classes == {"a": 2, "b": 3}
    images = np.random.RandomState(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    pixels = ((images + 1) / 2 - np.array(CLIP_MEAN)) / np.array(CLIP_STD)
    logits = labeller(jnp.asarray(images))
    for name, ids in prompts.items():
        with torch.no_grad():
            ref = model(input_ids=torch.from_numpy(ids),
                        pixel_values=nchw(pixels.astype(np.float32))).logits_per_image
        assert max_err(logits[name], ref) <= 1e-4
