"""guided-diffusion (ADM) checkpoints against the reference implementation in
../shared/oracles/guided_diffusion: the UNet and h on tiny configs covering every option, a
full-size celebahq_p2 forward, and the DDIM / DDPM loops with respacing and learned variance."""

import json
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
from bench.adm_reference import import_oracle, reference_forward, reference_model  # noqa: E402

try:
    import_oracle()  # ../shared/oracles onto sys.path
except FileNotFoundError:
    pytest.skip("../shared/oracles/guided_diffusion is not beside the checkout",
                allow_module_level=True)

from guided_diffusion import gaussian_diffusion  # noqa: E402
from guided_diffusion.respace import space_timesteps  # noqa: E402
from guided_diffusion.script_util import create_gaussian_diffusion  # noqa: E402

from dg_jax.convert.guided_diffusion import (  # noqa: E402
    PRESETS,
    adm_model_config,
    load_adm_unet,
)
from dg_jax.diffusion.respacing import respaced_timesteps  # noqa: E402
from dg_jax.diffusion.sampler_config import SamplerConfig  # noqa: E402
from dg_jax.diffusion.samplers import initial_noise, per_sample_normal, sample_keys  # noqa: E402
from dg_jax.loading import load_unet  # noqa: E402
from dg_jax.sampling import make_sampler  # noqa: E402

# Together: every create_model option we map, each way.
TINY = {
    "p2_options": dict(PRESETS["celebahq_p2"], image_size=64, num_channels=32,
                       channel_mult="1,1,2,2,4,4"),
    "plain": dict(image_size=32, num_channels=32, num_res_blocks=2, channel_mult="1,2,2",
                  attention_resolutions="16,8", num_heads=2, learn_sigma=False),
    "heads_upsample_new_order": dict(image_size=32, num_channels=32, num_res_blocks=1,
                                     channel_mult="1,2", attention_resolutions="32,16",
                                     num_heads=2, num_heads_upsample=4,
                                     use_new_attention_order=True, use_scale_shift_norm=True),
    "head_channels_updown_dropout": dict(image_size=32, num_channels=64, num_res_blocks=1,
                                         channel_mult="1,1,2", attention_resolutions="8",
                                         num_head_channels=32, resblock_updown=True,
                                         dropout=0.1, learn_sigma=True),
}


def save_checkpoint(model, path: pathlib.Path, flags: dict) -> pathlib.Path:
    """The model as guided-diffusion saves it (a plain state dict), with its flags as JSON."""
    torch.save(model.state_dict(), path)
    path.with_suffix(".json").write_text(json.dumps(flags))
    return path


def nchw(x):
    return np.asarray(x).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("name", sorted(TINY))
def test_output_and_h_match_the_reference(name, tmp_path):
    flags = TINY[name]
    model = reference_model(flags)
    unet, config = load_unet(save_checkpoint(model, tmp_path / "m.pt", flags),
                             str(tmp_path / "m.json"))
    n = flags["image_size"]
    x = np.random.RandomState(1).randn(2, 3, n, n).astype(np.float32)
    t = np.array([3, 870])
    want, want_h = reference_forward(model, x, t)
    enc = jax.jit(unet.encode)(jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(t))
    got = nchw(jax.jit(unet.decode)(*enc))  # jitted: op by op would compile every op alone
    assert got.shape == want.shape == (2, 6 if flags.get("learn_sigma") else 3, n, n)
    assert nchw(enc.h).shape == want_h.shape
    np.testing.assert_allclose(nchw(enc.h), want_h, atol=1e-4)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert config.unet.variance_type == ("learned_range" if flags.get("learn_sigma") else "fixed")


def test_full_size_celebahq_p2_forward(tmp_path):
    """The real architecture at 256 px: parameter count and one forward, same random weights."""
    model = reference_model(PRESETS["celebahq_p2"])
    torch.save(model.state_dict(), tmp_path / "celebahq_p2.pt")
    unet, config = load_unet(tmp_path / "celebahq_p2.pt", "celebahq_p2")
    from flax import nnx
    ours = sum(x.size for x in jax.tree.leaves(nnx.state(unet, nnx.Param)))
    assert ours == sum(p.numel() for p in model.parameters())
    assert config.unet.h_shape == (8, 8, 512)
    x = np.random.RandomState(0).randn(1, 3, 256, 256).astype(np.float32)
    t = np.array([500])
    want, want_h = reference_forward(model, x, t)
    enc = jax.jit(unet.encode)(jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.asarray(t))
    got = nchw(jax.jit(unet.decode)(*enc))
    scale = np.abs(want).max()
    assert np.abs(got - want).max() <= 1e-3 * scale
    assert np.abs(nchw(enc.h) - want_h).max() <= 1e-3 * np.abs(want_h).max()


@pytest.mark.parametrize("spacing", ["ddim10", "ddim50", "ddim250", "250", "10", "1",
                                     "10,20,30", "3,1,7,2", "1000"])
def test_respacing_matches_space_timesteps(spacing):
    assert respaced_timesteps(1000, spacing).tolist() == sorted(space_timesteps(1000, spacing))


def test_respacing_errors():
    with pytest.raises(ValueError, match="no integer stride"):
        respaced_timesteps(1000, "ddim300")
    with pytest.raises(ValueError, match="cannot hold"):
        respaced_timesteps(10, "6,1")
    with pytest.raises(ValueError, match="gives 25 steps"):
        SamplerConfig(num_steps=50, spacing="ddim25")
    assert SamplerConfig(spacing="10,5").resolve(SamplerConfig(num_steps=50)).num_steps == 15


LOOP_FLAGS = dict(image_size=16, num_channels=32, num_res_blocks=1, channel_mult="1,2",
                  attention_resolutions="2", num_head_channels=32, resblock_updown=True,
                  use_scale_shift_norm=True, learn_sigma=True)


class _FixedNoise:
    """Stands in for torch.randn_like in guided-diffusion's loops: hands out our noise."""

    def __init__(self, noises):
        self.noises = list(noises)

    def __call__(self, x):
        return torch.from_numpy(self.noises.pop(0).copy())


@pytest.mark.parametrize("method,eta,spacing", [("ddim", 0.0, "ddim10"), ("ddim", 1.0, "ddim10"),
                                                ("ddpm", None, "6,4")])
def test_sampling_loops_match_the_reference(method, eta, spacing, tmp_path, monkeypatch):
    model = reference_model(LOOP_FLAGS, seed=3)
    unet, config = load_unet(save_checkpoint(model, tmp_path / "m.pt", LOOP_FLAGS),
                             str(tmp_path / "m.json"))
    sampler_config = SamplerConfig(method=method, eta=eta or 0.0, spacing=spacing)
    keys = sample_keys(0, np.arange(2))
    images, _ = make_sampler(unet, config, sampler_config).jitted()(keys)

    shape = (16, 16, 3)
    steps = len(respaced_timesteps(1000, spacing))
    noises = [nchw(per_sample_normal(keys, i, shape)) for i in range(steps)]
    monkeypatch.setattr(gaussian_diffusion.th, "randn_like", _FixedNoise(noises))
    diffusion = create_gaussian_diffusion(steps=1000, learn_sigma=True, noise_schedule="linear",
                                          timestep_respacing=spacing)
    x_T = torch.from_numpy(nchw(initial_noise(keys, shape)).copy())
    with torch.no_grad():
        if method == "ddim":
            want = diffusion.ddim_sample_loop(model, x_T.shape, noise=x_T, eta=eta)
        else:
            want = diffusion.p_sample_loop(model, x_T.shape, noise=x_T)
    np.testing.assert_allclose(nchw(images), want.numpy(), atol=1e-4)


def test_model_config_presets_and_json(tmp_path):
    config = adm_model_config("celebahq_p2")
    assert config.unet.block_out_channels == (128, 128, 256, 256, 512, 512)
    assert config.unet.down_attention == (False, False, False, False, True, False)
    assert config.schedule.beta_start == pytest.approx(1e-4)
    assert config.sampling.spacing == "linspace" and config.sampling.num_steps == 50
    respaced = adm_model_config(dict(LOOP_FLAGS, timestep_respacing="ddim25",
                                     diffusion_steps=500))
    assert respaced.sampling.num_steps == 25 and respaced.schedule.beta_end == pytest.approx(0.04)
    assert adm_model_config("imagenet256_uncond").unet.h_shape == (8, 8, 1024)


@pytest.mark.parametrize("model_config,message", [
    ("celebahq_p3", "unknown model config 'celebahq_p3': a preset (celebahq_p2, ffhq_p2"),
    ({"num_chanels": 64}, "unknown guided-diffusion flag 'num_chanels'"),
    ({"class_cond": True}, "class-conditional"),
    ({"channel_mult": "2,2"}, "channel_mult 2,2 must be whole numbers starting at 1"),
    ({"image_size": 512, "channel_mult": "0.5,1,1,2,2,4,4"}, "must be whole numbers"),
])
def test_bad_model_configs_name_the_problem(model_config, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        adm_model_config(model_config)


def test_checkpoint_that_does_not_fit_names_the_first_mismatch(tmp_path):
    flags = TINY["plain"]
    state = reference_model(flags).state_dict()
    torch.save(state, tmp_path / "m.pt")
    with pytest.raises(ValueError, match=r"time_embed.0.weight: shape \(128, 32\) in the "
                       r"checkpoint, \(256, 64\) in the model config"):
        load_adm_unet(tmp_path / "m.pt", dict(flags, num_channels=64))
    torch.save({k: v for k, v in state.items() if k != "out.2.bias"}, tmp_path / "short.pt")
    with pytest.raises(ValueError, match=r"lacks out.2.bias \(3,\)"):
        load_adm_unet(tmp_path / "short.pt", flags)
    torch.save({**state, "extra.weight": torch.zeros(2)}, tmp_path / "long.pt")
    with pytest.raises(ValueError, match=r"has extra.weight \(2,\)"):
        load_adm_unet(tmp_path / "long.pt", flags)
    with pytest.raises(ValueError, match=r"give its architecture as model_config, a preset"):
        load_unet(tmp_path / "m.pt")


def test_fp16_safetensors_load_without_torch(tmp_path, monkeypatch):
    from safetensors.numpy import save_file

    flags = TINY["plain"]
    model = reference_model(flags)
    save_file({k: v.half().numpy() for k, v in model.state_dict().items()},
              str(tmp_path / "m.safetensors"))
    monkeypatch.setitem(sys.modules, "torch", None)  # reading .safetensors must not need it
    unet, _ = load_unet(tmp_path / "m.safetensors", flags)
    x = np.random.RandomState(0).randn(1, 3, 32, 32).astype(np.float32)
    monkeypatch.undo()
    want, _ = reference_forward(model.half().float(), x, np.array([100]))
    got = nchw(jax.jit(unet.__call__)(jnp.asarray(x.transpose(0, 2, 3, 1)), jnp.array([100])))
    np.testing.assert_allclose(got, want, atol=1e-4)
    monkeypatch.setitem(sys.modules, "torch", None)
    torch_file = tmp_path / "m.pt"
    torch_file.write_bytes(b"not read")
    with pytest.raises(ImportError, match="install torch, or convert it to .safetensors"):
        load_unet(torch_file, flags)


def test_end_to_end_on_a_guided_diffusion_checkpoint(tmp_path):
    """Collect h (generation path, and DDIM inversion of a labelled image folder), train the
    ADP, generate with distribution guidance (interrupted, then resumed) and evaluate, all on a
    checkpoint in guided-diffusion's own format."""
    from flax import nnx
    from helpers import TINY_CLASSIFIER, crash_at_shard
    from PIL import Image

    from dg_jax import configs
    from dg_jax.checkpoints import save_bundle
    from dg_jax.data.generated import read_generated
    from dg_jax.models.classifier import AttributeClassifier
    from sample import evaluate, generate
    from train import collect_hspace, train_adp

    save_checkpoint(reference_model(LOOP_FLAGS), tmp_path / "adm.pt", LOOP_FLAGS)
    model = ["--model", str(tmp_path / "adm.pt"), "--model-config", str(tmp_path / "adm.json")]
    for name, seed in (("clf", 0), ("evaluator", 1)):
        save_bundle(tmp_path / name, "classifier", configs.to_dict(TINY_CLASSIFIER),
                    AttributeClassifier(TINY_CLASSIFIER, rngs=nnx.Rngs(seed)))
    # real images of another size and their labels, by index (file-name order)
    (tmp_path / "faces").mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (24, 20, 3), np.uint8)).save(
            tmp_path / "faces" / f"{i:03d}.png")
    (tmp_path / "labels.csv").write_text("index,hair\n" + "".join(
        f"{i},{i % 2}\n" for i in range(8)))

    steps = ["--steps", "2", "--batch-size", "4"]  # the tests' 4 devices
    assert collect_hspace.main(["--out", str(tmp_path / "h_gen"), *model, "--classifier",
                                str(tmp_path / "clf"), "--num-samples", "4", *steps]) == 0
    assert collect_hspace.main(["--out", str(tmp_path / "h_inv"), *model, "--source", "invert",
                                "--images", str(tmp_path / "faces"), "--labels",
                                str(tmp_path / "labels.csv"), "--num-samples", "8", *steps]) == 0
    assert train_adp.main(["--data", str(tmp_path / "h_inv"), "--workdir", str(tmp_path / "adp"),
                           "--hidden", "8", "--time-dim", "8", "--holdout", "0.5",
                           # 2 does not split over the 4 devices: it uses 2 of them
                           "--batch-size", "2", "--steps", "2",
                           "--export", str(tmp_path / "adp_bundle")]) == 0

    out = tmp_path / "out"
    args = ["--out", str(out), *model, "--classifier", str(tmp_path / "clf"), "--num-images",
            "8", "--shard-size", "4", *steps, "--method", "distribution", "--adp",
            str(tmp_path / "adp_bundle"), "--target", "hair=0.3,0.7",
            "--on-degenerate", "warn"]  # random weights make noise
    with crash_at_shard(1):
        generate.main(args)
    assert generate.main(args) == 0
    data = read_generated(out)
    assert data["image"].shape == (8, 16, 16, 3) and data["index"].tolist() == list(range(8))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["last_run"]["generated"] == 4
    run = json.loads((out / "run.json").read_text())
    assert run["model_config"] == str(tmp_path / "adm.json")
    assert evaluate.main([str(out), "--evaluator", str(tmp_path / "evaluator"),
                          "--num-real", "0"]) == 0
    assert (out / "evaluation" / "report.json").is_file()
    # the same checkpoint with another architecture: one line, exit 2, nothing written
    bad = ["--out", str(tmp_path / "bad"), "--model", str(tmp_path / "adm.pt"),
           "--model-config", "celebahq_p2", "--num-images", "2", "--classifier", "none"]
    assert generate.main(bad) == 2 and not (tmp_path / "bad").exists()
