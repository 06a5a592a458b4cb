import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import TINY_UNET

from dg_jax import configs
from dg_jax.models.unet import UNet, UNetConfig


@pytest.fixture(scope="module")
def model():
    return UNet(TINY_UNET, rngs=nnx.Rngs(0))


def inputs(batch=2, size=8):
    x = jax.random.normal(jax.random.key(1), (batch, size, size, 3))
    return x, jnp.array([10, 900][:batch])


def test_shapes_and_h_space(model):
    x, t = inputs()
    assert model(x, t).shape == x.shape
    enc = model.encode(x, t)
    assert enc.h.shape == (2, *TINY_UNET.h_shape) == (2, 4, 4, 16)
    # conv_in, one resnet per level, one downsample between the two levels
    assert [s.shape[-1] for s in enc.skips] == [8, 8, 8, 16]


def test_decode_of_unmodified_h_is_the_forward_pass(model):
    x, t = inputs()
    h, skips, temb, _ = model.encode(x, t)
    np.testing.assert_array_equal(model.decode(h, skips, temb), model(x, t))


def test_editing_h_changes_only_what_the_decoder_sees(model):
    x, t = inputs()
    enc = model.encode(x, t)
    edited = model.decode(enc.h + 0.5, enc.skips, enc.temb)
    assert np.abs(np.asarray(edited - model(x, t))).max() > 1e-3
    # A per-sample edit leaves the other samples untouched.
    delta = jnp.zeros_like(enc.h).at[0].set(1.0)
    out = model.decode(enc.h + delta, enc.skips, enc.temb)
    np.testing.assert_array_equal(out[1], model(x, t)[1])


def test_jit_and_grad_through_h(model):
    x, t = inputs()
    graphdef, state = nnx.split(model)

    @jax.jit
    def loss_of_h(state, x, t):
        unet = nnx.merge(graphdef, state)
        enc = unet.encode(x, t)
        return jax.grad(lambda h: jnp.sum(unet.decode(h, enc.skips, enc.temb) ** 2))(enc.h)

    g = loss_of_h(state, x, t)
    assert g.shape == (2, 4, 4, 16) and np.all(np.isfinite(g))


def test_bfloat16_compute_is_close_to_float32():
    cfg32 = TINY_UNET
    cfg16 = UNetConfig(**{**cfg32.__dict__, "dtype": "bfloat16"})
    m32, m16 = UNet(cfg32, rngs=nnx.Rngs(0)), UNet(cfg16, rngs=nnx.Rngs(0))
    x, t = inputs()
    out16 = m16(x, t)
    assert out16.dtype == jnp.float32
    assert m16.encode(x, t).h.dtype == jnp.bfloat16
    err = np.abs(np.asarray(out16 - m32(x, t))).max()
    assert err < 0.1, err


def test_scale_shift_and_no_mid_attention_options():
    cfg = UNetConfig(**{**TINY_UNET.__dict__, "resnet_time_scale_shift": "scale_shift",
                        "mid_attention": False, "center_input_sample": True})
    x, t = inputs()
    assert UNet(cfg, rngs=nnx.Rngs(0))(x, t).shape == x.shape


@pytest.mark.parametrize("change, message", [
    ({"down_attention": (False,)}, "down_attention"),
    ({"norm_num_groups": 3}, "norm_num_groups"),
    ({"resnet_time_scale_shift": "film"}, "resnet_time_scale_shift"),
    ({"sample_size": 6, "block_out_channels": (8, 16, 16), "down_attention": (False,) * 3},
     "sample_size"),
])
def test_bad_config(change, message):
    with pytest.raises(ValueError, match=message):
        UNetConfig(**{**TINY_UNET.__dict__, **change})


def test_config_from_older_versions_loads_with_defaults():
    saved = {**configs.to_dict(TINY_UNET), "output_scale_factor": 1.0}
    for new_field in ("mid_block_scale_factor", "downsample_padding", "upsample_type"):
        saved.pop(new_field)
    assert UNetConfig.from_dict(saved) == TINY_UNET
    with pytest.raises(ValueError, match="output_scale_factor"):
        UNetConfig.from_dict({**saved, "output_scale_factor": 2.0})
    with pytest.raises(ValueError, match="unknown UNetConfig fields"):
        UNetConfig.from_dict({**saved, "colour": "blue"})
