"""Text-to-image with tiny random Stable Diffusion pipelines: the whole classifier-free-guided DDIM
loop against diffusers' StableDiffusionPipeline, and distribution guidance per prompt group."""

import json
import string

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dg_jax.diffusion import samplers
from dg_jax.diffusion.sampler_config import SamplerConfig
from dg_jax.diffusion.samplers import sample_keys
from dg_jax.guidance.distribution import GuidanceConfig
from dg_jax.guidance.methods import DistributionGuidance
from dg_jax.guidance.targets import parse_target
from dg_jax.loading import from_diffusers
from dg_jax.models.adp import ADP, ADPConfig
from dg_jax.models.stable_diffusion import StableDiffusion
from dg_jax.sampling import TextConditioning, make_sampler
from dg_jax.wrappers import ImageGuidance

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

MAX_TOKENS = 12


def tiny_tokenizer(folder):
    """A character-level CLIP BPE vocabulary (no merges): ids 0-51 letters, 52/53 begin/end."""
    folder.mkdir(parents=True)
    letters = list(string.ascii_lowercase)
    vocab = {t: i for i, t in enumerate(letters + [c + "</w>" for c in letters]
                                        + ["<|startoftext|>", "<|endoftext|>"])}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(folder),
                                                           model_max_length=MAX_TOKENS)
    tokenizer.save_pretrained(str(folder))
    return tokenizer


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory):
    """A saved tiny StableDiffusionPipeline (DDIM scheduler, SD 1.x defaults)."""
    path = tmp_path_factory.mktemp("tiny_sd")
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
        attention_head_dim=2, norm_num_groups=4)
    vae = diffusers.AutoencoderKL(
        block_out_channels=(8, 16), down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2, latent_channels=4, norm_num_groups=4)
    text_encoder = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        vocab_size=54, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS, bos_token_id=52,
        eos_token_id=53, pad_token_id=53))
    with torch.no_grad():  # move every parameter off its init, so that each one matters
        for model in (unet, vae, text_encoder):
            for p in model.parameters():
                p.add_(0.1 * torch.randn_like(p))
    scheduler = diffusers.DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                        beta_end=0.012, clip_sample=False, set_alpha_to_one=False,
                                        steps_offset=1)
    diffusers.StableDiffusionPipeline(
        unet=unet.eval(), vae=vae.eval(), text_encoder=text_encoder.eval(),
        tokenizer=tiny_tokenizer(path / "_tokenizer"), scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    ).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def loaded(pipeline_dir):
    return from_diffusers(pipeline_dir)


def test_loads_a_pipeline_folder(pipeline_dir, loaded):
    sd, config = loaded
    assert isinstance(sd, StableDiffusion) and sd.image_size == 16
    assert config.schedule.beta_schedule == "scaled_linear"
    assert (config.sampling.steps_offset, config.sampling.set_alpha_to_one) == (1, False)
    context = sd.encode_prompts(["a photo of a cat", ""])
    assert context.shape == (2, MAX_TOKENS, 16)
    # component folders alone
    unet, unet_config = from_diffusers(pipeline_dir / "unet")
    assert unet.config == sd.unet.config and unet_config == config
    vae, none = from_diffusers(pipeline_dir / "vae")
    assert none is None and vae.config == sd.vae.config
    text, _ = from_diffusers(pipeline_dir / "text_encoder")
    assert text.config == sd.text_encoder.config


def test_classifier_free_guided_ddim_matches_diffusers(pipeline_dir, loaded):
    sd, config = loaded
    prompts = ["a cat", "a dog"]
    keys = sample_keys(3, np.arange(2))
    x_T = np.array(samplers.initial_noise(keys, (8, 8, 4)))  # writable, for torch
    reference = diffusers.StableDiffusionPipeline.from_pretrained(pipeline_dir)
    with torch.no_grad():
        ref = reference(prompts, num_inference_steps=4, guidance_scale=3.0, eta=0.0, height=16,
                        width=16, latents=torch.from_numpy(x_T.transpose(0, 3, 1, 2)),
                        output_type="np").images  # [B, H, W, 3] in [0, 1]
    sampler = make_sampler(sd.unet, config, SamplerConfig(num_steps=4, method="ddim", eta=0.0),
                           text=TextConditioning(cfg_scale=3.0), vae=sd.vae).jitted()
    images, _ = sampler(keys, context=sd.encode_prompts(prompts),
                        uncond_context=sd.encode_prompts([""])[0])
    assert images.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(np.asarray(images) / 2 + 0.5, ref, atol=1e-4)


def tiny_adp(sd):
    return ADP(ADPConfig(attributes=(("a", 2),), h_shape=sd.unet.config.h_shape, hidden=8,
                         time_dim=8), rngs=nnx.Rngs(0))


def test_distribution_guidance_per_prompt_group(loaded):
    """Groups are guided each on its own: changing group 1's prompt leaves group 0 untouched; the
    trace holds each group's p_hat; scale 0 is the unguided sampler bit for bit. (Latents: no
    autoencoder, which would only add compile time.)"""
    sd, config = loaded
    adp = tiny_adp(sd)
    targets = [parse_target("a=0.5,0.5", adp.config.num_classes)]
    sampler_config = SamplerConfig(num_steps=3, method="ddim", eta=1.0)
    text = TextConditioning(cfg_scale=2.0, group_size=2)
    def guided_sampler(push):
        guidance = GuidanceConfig(scale=1e4, start_step=0, push=push)
        return make_sampler(sd.unet, config, sampler_config,
                            DistributionGuidance(adp, targets, guidance), text=text).jitted()

    guided = guided_sampler("posterior")
    uncond = sd.encode_prompts([""])[0]
    keys = sample_keys(0, np.arange(4))
    first = sd.encode_prompts(["a cat"] * 2 + ["a dog"] * 2)
    second = sd.encode_prompts(["a cat"] * 2 + ["a tree"] * 2)
    images_1, trace = guided(keys, context=first, uncond_context=uncond)
    images_2, _ = guided(keys, context=second, uncond_context=uncond)
    assert trace["p_hat"]["a"].shape == (3, 2, 2)  # steps, groups, classes
    assert bool(jnp.all(jnp.isfinite(images_1)))
    np.testing.assert_array_equal(images_1[:2], images_2[:2])
    assert not np.allclose(images_1[2:], images_2[2:])
    committed = guided_sampler("commit")  # each sample's draw travels with its group
    np.testing.assert_array_equal(committed(keys, context=first, uncond_context=uncond)[0][:2],
                                  committed(keys, context=second, uncond_context=uncond)[0][:2])

    unguided = make_sampler(sd.unet, config, sampler_config, text=text).jitted()
    off = make_sampler(sd.unet, config, sampler_config,
                       DistributionGuidance(adp, targets, GuidanceConfig(scale=0.0)),
                       text=text).jitted()
    plain, _ = unguided(keys, context=first, uncond_context=uncond)
    np.testing.assert_array_equal(off(keys, context=first, uncond_context=uncond)[0], plain)
    assert not np.allclose(images_1, plain)


def test_text_conditional_sampler_misuse_is_named(loaded):
    sd, config = loaded
    with pytest.raises(ValueError, match="needs `text`"):
        make_sampler(sd.unet, config, SamplerConfig(num_steps=2))
    adp = tiny_adp(sd)
    targets = [parse_target("a=0.5,0.5", adp.config.num_classes)]
    with pytest.raises(ValueError, match="latent models"):
        make_sampler(sd.unet, config, SamplerConfig(num_steps=2),
                     ImageGuidance(object(), targets), text=TextConditioning(), vae=sd.vae)
    with pytest.raises(ValueError, match="cfg_scale"):
        TextConditioning(cfg_scale=0.5)
    sampler = make_sampler(sd.unet, config, SamplerConfig(num_steps=2),
                           text=TextConditioning(), vae=sd.vae).jitted()
    with pytest.raises(ValueError, match="needs context"):
        sampler(jax.random.split(jax.random.key(0), 2))


def tiny_clip_dir(folder):
    """A saved tiny CLIPModel (vocabulary of the tiny tokenizer) with its tokenizer files."""
    torch.manual_seed(1)
    text = dict(vocab_size=54, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                num_attention_heads=4, max_position_embeddings=MAX_TOKENS, bos_token_id=52,
                eos_token_id=53, pad_token_id=53)
    vision = dict(hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                  num_attention_heads=4, image_size=32, patch_size=8)
    transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision,
                                                   projection_dim=8)).save_pretrained(folder)
    tiny_tokenizer(folder / "_tokenizer").save_pretrained(str(folder))
    return folder


def test_collect_train_generate_on_a_stable_diffusion_folder(pipeline_dir, tmp_path):
    """The whole text-to-image path through the CLIs: h of the conditional branch collected with
    prompts from a file and CLIP zero-shot labels, an ADP trained on it, then sample.generate
    with prompt groups, distribution guidance, CLIP labels and dataset balance; a rerun continues
    (nothing left to do); text-to-image flags without a text-to-image model are refused."""
    from dg_jax.data import read_generated
    from dg_jax.training.adp import ADPTrainConfig, train
    from sample import generate
    from train import collect_hspace

    clip = tiny_clip_dir(tmp_path / "clip")
    labels = ["--clip", str(clip), "--class-prompt", "a=a photo of a cat|a photo of a dog",
              "--guidance-scale", "2", "--steps", "2"]
    (tmp_path / "prompts.txt").write_text("a cat\n\na dog\n")
    assert collect_hspace.main(["--out", str(tmp_path / "h"), "--model", str(pipeline_dir),
                                "--prompts-file", str(tmp_path / "prompts.txt"),
                                "--num-samples", "8", "--batch-size", "4", *labels]) == 0
    _, report = train(ADPTrainConfig(data=str(tmp_path / "h"), workdir=str(tmp_path / "adp_w"),
                                     hidden=8, time_dim=8, holdout=0.25, batch_size=4, steps=2,
                                     export=str(tmp_path / "adp")))
    assert report["heldout_samples"] == 2
    out = tmp_path / "out"
    argv = ["--model", str(pipeline_dir), "--out", str(out), "--num-images", "6",
            "--batch-size", "4", "--prompt", "a cat", "--prompt", "a dog",
            "--method", "distribution", "--adp", str(tmp_path / "adp"), "--target", "a=0.5,0.5",
            "--on-degenerate", "warn", *labels]  # a random UNet makes noise
    assert generate.main(argv) == 0
    data = read_generated(out)
    assert data["image"].shape == (6, 16, 16, 3) and data["prob_a"].shape == (6, 2)
    # row r of every batch (4 rows, groups of 2) has prompt r // 2
    assert list(data["prompt"]) == ["a cat", "a cat", "a dog", "a dog", "a cat", "a cat"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert sum(manifest["counts"]["a"]) == 6
    assert generate.main(argv) == 0  # complete: nothing to generate
    assert json.loads((out / "manifest.json").read_text())["last_run"]["generated"] == 0
    assert generate.main(["--out", str(tmp_path / "x"), "--num-images", "4", "--prompt",
                          "a cat"]) == 2
    assert generate.main(argv + ["--out", str(tmp_path / "y"), "--batch-size", "3"]) == 2
    assert collect_hspace.main(["--out", str(tmp_path / "z"), "--model", str(pipeline_dir),
                                "--prompt", "a cat", "--source", "invert", *labels]) == 2
