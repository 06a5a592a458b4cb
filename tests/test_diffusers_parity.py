"""Converted diffusers UNet2DModels against the PyTorch reference: same outputs, same h."""

import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from dg_jax.diffusion import samplers
from dg_jax.diffusion.sampler_config import SamplerConfig
from dg_jax.diffusion.schedules import alphas_cumprod
from dg_jax.loading import from_diffusers, load_unet
from dg_jax.sampling import sampling_plan

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")

# Tiny UNet2DModel configs that together cover the options released unconditional checkpoints use.
CONFIGS = {
    "attention_low_res": dict(
        block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8, norm_num_groups=4),
    "original_ddpm": dict(  # google/ddpm-* style: padding 0, sin-first embedding, shift 1
        block_out_channels=(8, 8, 16), layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), attention_head_dim=None,
        norm_num_groups=4, norm_eps=1e-6, downsample_padding=0, flip_sin_to_cos=False,
        freq_shift=1, center_input_sample=True),
    "adm_resnet_resampling": dict(  # scale-shift norm, BigGAN resampling, mid scale, no mid norm
        block_out_channels=(8, 16, 16), layers_per_block=1,
        down_block_types=("AttnDownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D"), attention_head_dim=4,
        norm_num_groups=4, resnet_time_scale_shift="scale_shift", downsample_type="resnet",
        upsample_type="resnet", mid_block_scale_factor=2**0.5, time_embedding_dim=24),
    "no_mid_attention_channels": dict(
        in_channels=1, out_channels=2, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("AttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "AttnUpBlock2D"), attention_head_dim=4, norm_num_groups=2,
        add_attention=False),
    "scale_shift_mid_groups": dict(
        block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"), attention_head_dim=8, norm_num_groups=4,
        attn_norm_num_groups=2, resnet_time_scale_shift="scale_shift"),
}


def torch_unet(config: dict, seed: int = 0):
    """A random UNet2DModel whose every parameter (norms included) is perturbed off its init."""
    torch.manual_seed(seed)
    model = diffusers.UNet2DModel(sample_size=16, **config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def reference(model, x_nhwc: np.ndarray, t: np.ndarray):
    """(output, h) of the torch model, NHWC numpy."""
    captured = {}
    hook = model.mid_block.register_forward_hook(lambda m, i, o: captured.update(h=o))
    with torch.no_grad():
        out = model(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2)), torch.from_numpy(t)).sample
    hook.remove()
    return out.numpy().transpose(0, 2, 3, 1), captured["h"].numpy().transpose(0, 2, 3, 1)


def inputs(channels: int, t):
    x = np.random.RandomState(0).randn(2, 16, 16, channels).astype(np.float32)
    return x, np.asarray(t)


@pytest.mark.parametrize("name", CONFIGS)
def test_output_and_h_match_diffusers(name, tmp_path):
    model = torch_unet(CONFIGS[name])
    model.save_pretrained(tmp_path)
    ours, config = from_diffusers(tmp_path)
    for t in ([3, 999], [10.5, 500.25]):  # integer and fractional timesteps
        x, t = inputs(model.config.in_channels, t)
        ref_out, ref_h = reference(model, x, t)
        out = np.asarray(ours(jnp.asarray(x), jnp.asarray(t)))
        h = np.asarray(ours.encode(jnp.asarray(x), jnp.asarray(t)).h)
        assert out.shape == ref_out.shape and h.shape == (2, *config.unet.h_shape)
        assert np.abs(out - ref_out).max() <= 1e-4, name
        assert np.abs(h - ref_h).max() <= 1e-4, name


def test_legacy_bin_with_old_attention_names(tmp_path):
    """Original DDPM checkpoints ship a .bin with query/key/value/proj_attn names."""
    model = torch_unet(CONFIGS["original_ddpm"])
    model.save_pretrained(tmp_path, safe_serialization=False)
    state = torch.load(tmp_path / "diffusion_pytorch_model.bin", weights_only=True)
    old = {".to_q.": ".query.", ".to_k.": ".key.", ".to_v.": ".value.", ".to_out.0.": ".proj_attn."}
    renamed = {}
    for k, v in state.items():
        for new, legacy in old.items():
            k = k.replace(new, legacy)
        renamed[k] = v
    assert any(".proj_attn." in k for k in renamed)
    torch.save(renamed, tmp_path / "diffusion_pytorch_model.bin")
    ours, _ = from_diffusers(tmp_path)
    x, t = inputs(3, [7, 420])
    ref_out, _ = reference(model, x, t)
    assert np.abs(np.asarray(ours(jnp.asarray(x), jnp.asarray(t))) - ref_out).max() <= 1e-4


def save_pipeline(path, unet, **scheduler_options):
    scheduler = diffusers.DDPMScheduler(**scheduler_options)
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(path)


def test_pipeline_folder_honours_the_scheduler_config(tmp_path):
    save_pipeline(tmp_path, torch_unet(CONFIGS["attention_low_res"]), prediction_type="v_prediction",
                  beta_schedule="squaredcos_cap_v2", clip_sample=True, clip_sample_range=2.0,
                  steps_offset=1, timestep_spacing="linspace", num_train_timesteps=500)
    _, config = from_diffusers(tmp_path)
    assert config.unet.prediction_type == "v_prediction"
    assert (config.schedule.beta_schedule, config.schedule.num_train_timesteps) == (
        "squaredcos_cap_v2", 500)
    s = config.sampling
    assert (s.spacing, s.steps_offset, s.clip_sample, s.set_alpha_to_one) == ("linspace", 1, 2.0,
                                                                             True)
    # A UNet folder inside a pipeline picks up its sibling scheduler.
    _, unet_only = from_diffusers(tmp_path / "unet")
    assert unet_only == config


def torch_loop(model, scheduler, x_T: np.ndarray, steps: int, **step_options) -> np.ndarray:
    """The reference: `steps` steps of a diffusers scheduler with the torch model, NHWC."""
    scheduler.set_timesteps(steps)
    x = torch.from_numpy(x_T.transpose(0, 3, 1, 2))
    with torch.no_grad():
        for t in scheduler.timesteps:
            x = scheduler.step(model(x, t).sample, t, x, **step_options).prev_sample
    return x.numpy().transpose(0, 2, 3, 1)


def test_ddim_loop_matches_diffusers_scheduler(tmp_path):
    """Whole deterministic DDIM loops: torch model + DDIMScheduler vs our converted model + scan."""
    model = torch_unet(CONFIGS["attention_low_res"])
    options = dict(beta_schedule="scaled_linear", beta_start=0.001, beta_end=0.02,
                   clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                   timestep_spacing="leading")
    scheduler = diffusers.DDIMScheduler(**options)
    diffusers.DDIMPipeline(unet=model, scheduler=scheduler).save_pretrained(tmp_path)
    ours, config = from_diffusers(tmp_path)
    x_T = np.random.RandomState(1).randn(2, 16, 16, 3).astype(np.float32)

    ref = torch_loop(model, scheduler, x_T, 6, eta=0.0)

    s = config.sampling
    ts = samplers.sampling_timesteps(1000, 6, s.spacing, s.steps_offset)
    np.testing.assert_array_equal(ts, scheduler.timesteps.numpy())
    alpha_bar = alphas_cumprod(config.schedule)
    final = 1.0 if s.set_alpha_to_one else alpha_bar[0]
    x0, _ = samplers.sample(lambda x, t, i: (ours(x, t), None), jnp.asarray(x_T), None,
                            alpha_bar, ts, "ddim", 0.0, final_alpha_bar=final)
    assert np.abs(np.asarray(x0) - ref).max() <= 1e-4


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_dpm_solver_2m_loop_matches_diffusers_scheduler(spacing, tmp_path):
    """DPM-Solver++(2M) (diffusers' defaults: midpoint, final sigma 0) against
    DPMSolverMultistepScheduler, timesteps included."""
    model = torch_unet(CONFIGS["attention_low_res"])
    scheduler = diffusers.DPMSolverMultistepScheduler(
        beta_schedule="scaled_linear", beta_start=0.001, beta_end=0.02, steps_offset=1,
        timestep_spacing=spacing)
    diffusers.DDIMPipeline(unet=model, scheduler=scheduler).save_pretrained(tmp_path)
    ours, config = from_diffusers(tmp_path)
    x_T = np.random.RandomState(1).randn(2, 16, 16, 3).astype(np.float32)
    ref = torch_loop(model, scheduler, x_T, 8)

    plan = sampling_plan(config, SamplerConfig(num_steps=8, method="dpm++2m"))
    _, ts, alpha_bar, final = plan
    np.testing.assert_array_equal(ts, scheduler.timesteps.numpy())
    x0, _ = samplers.sample(lambda x, t, i: (ours(x, t), None), jnp.asarray(x_T), None,
                            alpha_bar, ts, "dpm++2m", final_alpha_bar=final)
    # From t = 999 (trailing) the random model's x0 predictions reach a few hundred: float32
    # rounding scales with them.
    assert np.abs(np.asarray(x0) - ref).max() <= 1e-4 + 1e-6 * np.abs(ref).max()


def test_convert_once_to_a_bundle(tmp_path):
    from sample import convert_diffusers

    save_pipeline(tmp_path / "pipe", torch_unet(CONFIGS["original_ddpm"]), clip_sample=False)
    assert convert_diffusers.main([str(tmp_path / "pipe"), str(tmp_path / "bundle")]) == 0
    direct, config = from_diffusers(tmp_path / "pipe")
    loaded, loaded_config = load_unet(tmp_path / "bundle")
    assert loaded_config == config and loaded_config.sampling.clip_sample == 0.0
    x, t = inputs(3, [5, 600])
    np.testing.assert_array_equal(np.asarray(loaded(jnp.asarray(x), jnp.asarray(t))),
                                  np.asarray(direct(jnp.asarray(x), jnp.asarray(t))))
    # Never overwrites.
    assert convert_diffusers.main([str(tmp_path / "pipe"), str(tmp_path / "bundle")]) == 2


def test_safetensors_load_without_torch(tmp_path):
    torch_unet(CONFIGS["attention_low_res"]).save_pretrained(tmp_path)
    code = ("import sys; sys.modules['torch'] = None\n"  # makes `import torch` fail
            "from dg_jax.loading import from_diffusers\n"
            f"m, c = from_diffusers({str(tmp_path)!r}); print(c.unet.h_shape)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "(8, 8, 16)"


@pytest.fixture
def saved_config(tmp_path):
    torch_unet(CONFIGS["attention_low_res"]).save_pretrained(tmp_path)
    return tmp_path


def _edit_config(folder, **changes):
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("changes, message", [
    (dict(time_embedding_type="fourier"), "time_embedding_type"),
    (dict(down_block_types=["SkipDownBlock2D", "AttnDownBlock2D"]), "SkipDownBlock2D"),
    (dict(class_embed_type="timestep"), "class_embed_type"),
    (dict(act_fn="gelu"), "act_fn"),
    (dict(some_future_option=3), "some_future_option"),
    (dict(_class_name="UNet2DConditionModel"), "UNet2DConditionModel"),
    (dict(block_out_channels=[8, 32]), "shape"),
])
def test_unsupported_or_mismatched_configs_name_the_problem(saved_config, changes, message):
    _edit_config(saved_config, **changes)
    with pytest.raises(ValueError, match=message):
        from_diffusers(saved_config)


def test_missing_weights_and_bad_scheduler_options(saved_config, tmp_path):
    (saved_config / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="diffusion_pytorch_model"):
        from_diffusers(saved_config)
    with pytest.raises(FileNotFoundError, match="no diffusers model"):
        from_diffusers(tmp_path / "nowhere")
    from dg_jax.convert.diffusers import scheduler_from_diffusers
    with pytest.raises(ValueError, match="variance_type"):
        scheduler_from_diffusers({"variance_type": "learned_range"})
    with pytest.raises(ValueError, match="thresholding"):
        scheduler_from_diffusers({"thresholding": True})


def test_generate_cli_on_a_diffusers_pipeline(tmp_path):
    from sample import generate

    save_pipeline(tmp_path / "pipe", torch_unet(CONFIGS["attention_low_res"]), steps_offset=1)
    args = ["--out", str(tmp_path / "out"), "--model", str(tmp_path / "pipe"), "--num-images", "3",
            "--batch-size", "2", "--steps", "3", "--classifier", "none",
            "--on-degenerate", "warn"]  # a random UNet makes noise
    assert generate.main(args) == 0
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    # Sampling defaults come from the pipeline's scheduler config.
    assert run["sampler"]["spacing"] == "leading" and run["sampler"]["steps_offset"] == 1
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["num_images"] == 3 and manifest["counts"] == {}
    assert generate.main(args) == 0  # the same command again: nothing to do, same config
    bad = args + ["--steps-offset", "0"]
    assert generate.main(bad) == 2  # another config into the same --out is refused


def test_hspace_collection_and_adp_training_on_a_diffusers_model(tmp_path):
    from flax import nnx
    from helpers import TINY_CLASSIFIER

    from dg_jax import configs
    from dg_jax.checkpoints import save_bundle
    from dg_jax.models.classifier import AttributeClassifier
    from dg_jax.training.adp import ADPTrainConfig, train
    from train import collect_hspace

    save_pipeline(tmp_path / "pipe", torch_unet(CONFIGS["attention_low_res"]))
    classifier = AttributeClassifier(TINY_CLASSIFIER, rngs=nnx.Rngs(0))
    save_bundle(tmp_path / "clf", "classifier", configs.to_dict(TINY_CLASSIFIER), classifier)
    assert collect_hspace.main(["--out", str(tmp_path / "h"), "--model", str(tmp_path / "pipe"),
                                "--classifier", str(tmp_path / "clf"), "--num-samples", "8",
                                "--batch-size", "4", "--steps", "2"]) == 0
    _, report = train(ADPTrainConfig(data=str(tmp_path / "h"), workdir=str(tmp_path / "adp"),
                                     hidden=8, time_dim=8, holdout=0.25, batch_size=4, steps=2,
                                     export=str(tmp_path / "adp_bundle")))
    assert report["heldout_samples"] == 2 and len(report["timesteps"]) == 2
    # Guided generation on the converted model with the ADP trained for it.
    from sample import generate
    assert generate.main(["--out", str(tmp_path / "out"), "--model", str(tmp_path / "pipe"),
                          "--classifier", str(tmp_path / "clf"), "--num-images", "4",
                          "--batch-size", "4", "--steps", "2", "--method", "distribution",
                          "--adp", str(tmp_path / "adp_bundle"), "--target", "skin=uniform",
                          "--on-degenerate", "warn"]) == 0
