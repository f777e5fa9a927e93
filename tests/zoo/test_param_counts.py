"""Parameter counts: the book-size models against their published totals, every tiny entry
against a count computed here from the architecture formula (independently of the zoo code),
and the book-size graphs traced with a symbolic batch dim."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from lbdl_graph.frontends.zoo import ZOO, names
from lbdl_graph.frontends.zoo.gpt import gpt_params

# ---- building blocks of the formulas ----


def lin(a: int, b: int, bias: bool = True) -> int:
    return a * b + (b if bias else 0)


def conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cin * cout * k * k + (cout if bias else 0)


def mlp(*sizes: int) -> int:
    return sum(lin(a, b) for a, b in itertools.pairwise(sizes))


def norm(d: int) -> int:  # LayerNorm / BatchNorm affine parameters (buffers are not counted)
    return 2 * d


def mha(d: int) -> int:  # in_proj (3d x d + 3d) and out_proj (d x d + d)
    return 4 * d * d + 4 * d


def block(d: int, ff: int) -> int:  # self-attention block + feed-forward block
    return 2 * norm(d) + mha(d) + mlp(d, ff, d)


def decoder_block(d: int, ff: int) -> int:
    return 3 * norm(d) + 2 * mha(d) + mlp(d, ff, d)


def double_conv(a: int, b: int) -> int:  # (3x3 conv without bias, BatchNorm) twice
    return conv(a, b, 3, False) + conv(b, b, 3, False) + 2 * norm(b)


def resnet(c) -> int:
    basic = c.block == "basic"
    exp = 1 if basic else 4
    total = conv(c.in_channels, c.stem_width, 7 if c.stem == "imagenet" else 3, False)
    total += norm(c.stem_width)
    cin = c.stem_width
    for i, (n, w) in enumerate(zip(c.layers, c.widths, strict=True)):
        for j in range(n):
            stride, out = (2 if i and not j else 1), w * exp
            if basic:
                total += conv(cin, w, 3, False) + conv(w, out, 3, False) + norm(w) + norm(out)
            else:
                total += conv(cin, w, 1, False) + conv(w, w, 3, False) + conv(w, out, 1, False)
                total += 2 * norm(w) + norm(out)
            if stride != 1 or cin != out:
                total += conv(cin, out, 1, False) + norm(out)
            cin = out
    return total + lin(cin, c.num_classes)


def alexnet(c) -> int:
    chans, kernels = (c.in_channels, *c.widths), (11, 5, 3, 3, 3)
    return (sum(conv(a, b, k) for (a, b), k in zip(itertools.pairwise(chans), kernels,
                                                    strict=True))
            + mlp(c.widths[-1] * c.pool_size ** 2, c.hidden, c.hidden, c.num_classes))


def vgg(c) -> int:
    chans = [c.in_channels, *(v for v in c.layers if v != "M")]
    return (sum(conv(a, b, 3) + (norm(b) if c.batch_norm else 0)
                for a, b in itertools.pairwise(chans))
            + mlp(chans[-1] * c.pool_size ** 2, c.hidden, c.hidden, c.num_classes))


def googlenet(c) -> int:
    def basic(a: int, b: int, k: int) -> int:  # conv without bias + BatchNorm
        return conv(a, b, k, False) + norm(b)

    s1, s2, s3 = c.stem
    total, cin, ins = basic(c.in_channels, s1, 7) + basic(s1, s2, 1) + basic(s2, s3, 3), s3, []
    for c1, r3, c3, r5, c5, pool in c.blocks:
        ins.append(cin)
        total += (basic(cin, c1, 1) + basic(cin, r3, 1) + basic(r3, c3, 3) + basic(cin, r5, 1)
                  + basic(r5, c5, 3) + basic(cin, pool, 1))
        cin = c1 + c3 + c5 + pool
    if c.aux_logits:  # after inception4a (the input of 4b) and 4d (the input of 4e)
        total += sum(basic(w, c.aux_channels, 1) + mlp(16 * c.aux_channels, c.aux_hidden,
                                                       c.num_classes) for w in (ins[3], ins[6]))
    return total + lin(cin, c.num_classes)


def gpt(c) -> int:
    d = c.d_model
    head = c.vocab_size * d if c.head and not c.tie_weights else 0
    return (c.vocab_size + c.context) * d + c.num_layers * block(d, c.ff) + norm(d) + head


def vit(c) -> int:
    m = (c.image_size // c.patch_size) ** 2
    d = c.d_model
    head = mlp(d, *c.head_hidden, c.num_classes) if c.num_classes else 0
    return (conv(c.in_channels, d, c.patch_size) + d + (m + 1) * d
            + c.num_layers * block(d, c.d_ff) + norm(d) + head)


def rnn_layers(cell: str, inp: int, h: int, layers: int) -> int:
    gates = {"rnn": 1, "gru": 3, "lstm": 4}[cell]
    return sum(gates * (h * (inp if i == 0 else h) + h * h + 2 * h) for i in range(layers))


def formula(name: str) -> int:
    c = ZOO[name].config
    if name.startswith("mlp"):
        return mlp(*c.sizes)
    if name.startswith("lenet"):
        chans = (c.in_channels, *c.channels)
        return (sum(conv(a, b, c.kernel_size) for a, b in itertools.pairwise(chans))
                + mlp(c.flat_features(), *c.hidden, c.num_classes))
    if name.startswith("capsnet"):  # conv, primary capsule conv, W_ij (no bias), decoder
        grid = ((c.image_size + 2 * c.conv_padding - c.conv_kernel + 1 + 2 * c.primary_padding
                 - c.primary_kernel) // c.primary_stride + 1)
        return (conv(c.in_channels, c.conv_channels, c.conv_kernel)
                + conv(c.conv_channels, c.primary_types * c.primary_dim, c.primary_kernel)
                + c.primary_types * grid * grid * c.num_classes * c.caps_dim * c.primary_dim
                + mlp(c.num_classes * c.caps_dim, *c.decoder_hidden,
                      c.in_channels * c.image_size ** 2))
    if name.startswith("resnet"):
        return resnet(c)
    if name.startswith("alexnet"):
        return alexnet(c)
    if name.startswith("vgg"):
        return vgg(c)
    if name.startswith("googlenet"):
        return googlenet(c)
    if name.startswith("transformer"):
        d = c.d_model
        emb = c.src_vocab * d + (0 if c.share_embeddings else c.tgt_vocab * d)
        out = 0 if c.tie_output else c.tgt_vocab * d
        return (emb + out + c.num_encoder_layers * block(d, c.d_ff)
                + c.num_decoder_layers * decoder_block(d, c.d_ff))
    if name.startswith("gpt"):
        return gpt(c)
    if name.startswith("vit"):
        return vit(c)
    if name.startswith("bert"):  # token, position and segment tables, LN, post-LN blocks, pooler
        d = c.d_model
        return ((c.vocab_size + c.max_position + c.type_vocab_size) * d + norm(d)
                + c.num_layers * block(d, c.d_ff) + (lin(d, d) if c.pooler else 0))
    table = {
        "autoencoder_mlp": mlp(784, 256, 32) + mlp(32, 256, 784),
        "autoencoder_conv": (conv(1, 16, 3) + conv(16, 32, 3) + lin(32 * 49, 32)
                             + lin(32, 32 * 49) + conv(32, 16, 3) + 16 * 9 * 1 + 1),
        "denoising_autoencoder": (conv(1, 8, 3) + conv(8, 16, 3) + lin(16 * 16, 16)
                                  + lin(16, 16 * 16) + conv(16, 8, 3) + 8 * 9 + 1),
        "vae": mlp(64, 32) + 2 * lin(32, 4) + mlp(4, 32, 64),
        "unet_tiny": (double_conv(3, 8) + double_conv(8, 16) + double_conv(16, 32)
                      + conv(32, 16, 2) + double_conv(32, 16)  # up: transposed conv, convs
                      + conv(16, 8, 2) + double_conv(16, 8) + conv(8, 4, 1)),
        "detector_tiny": (conv(3, 8, 3, False) + conv(8, 16, 3, False)
                          + conv(16, 32, 3, False) + norm(8) + norm(16) + norm(32)
                          + conv(32, 3 * 4, 3) + conv(32, 3 * 4, 3)),
        "clip_tiny": (conv(3, 32, 8) + 32 + 17 * 32 + 2 * block(32, 128) + norm(32)  # ViT
                      + (64 + 16) * 32 + 2 * block(32, 128) + norm(32)  # text transformer
                      + 32 * 16 + 32 * 16 + 1),  # projections, temperature
        "dqn": mlp(4, 64, 64, 2),
        "dqn_dueling": mlp(8, 32, 32) + lin(32, 1) + lin(32, 4),
        "dqn_atari": (conv(4, 32, 8) + conv(32, 64, 4) + conv(64, 64, 3)
                      + mlp(64 * 7 * 7, 512, 18)),
        "diffusion_denoiser": (mlp(32, 128, 32) + conv(1, 16, 3)
                               + (2 * conv(16, 16, 3) + lin(32, 16))  # down
                               + conv(16, 32, 3)
                               + (2 * conv(32, 32, 3) + lin(32, 32))  # mid
                               + conv(32, 16, 2)
                               + (conv(32, 16, 3) + conv(16, 16, 3) + lin(32, 16)
                                  + conv(32, 16, 1))  # up, with its 1x1 skip
                               + conv(16, 1, 3)),
        "gan": (lin(64, 64 * 49, False) + norm(64 * 49) + conv(64, 32, 4, False) + norm(32)
                + conv(32, 1, 4) + conv(1, 32, 4) + conv(32, 64, 4) + lin(64 * 49, 1)),
        "gnn": mlp(1433, 16, 7),
        "gnn_tiny": mlp(8, 16, 16, 3),
        # g_theta: one Linear over [o_i, o_j, q] (2*10 + 13 -> 64), two more; f_phi
        "relation_network": lin(33, 64) + mlp(64, 64, 64) + mlp(64, 64, 11),
        "char_rnn": 96 * 32 + rnn_layers("gru", 32, 64, 1) + lin(64, 96),
        "text_embedder": 512 * 32 + mlp(32, 64, 32),
        "siamese": conv(1, 16, 3) + conv(16, 32, 3) + mlp(32 * 2 * 2, 64, 16),
        "whisper_tiny": (20 * 32 * 3 + 32 + 32 * 32 * 3 + 32 + block(32, 64) + norm(32)
                         + 13 * 32 + 16 * 32 + decoder_block(32, 64) + norm(32)),
        "lstm_lm": 1000 * 64 + rnn_layers("lstm", 64, 64, 2) + 1000,  # tied head: bias only
    }
    return table[name]


@pytest.mark.parametrize("name", names(tiny=True))
def test_tiny_parameter_count_matches_the_architecture_formula(name):
    assert ZOO[name].model().num_parameters() == formula(name)


def test_known_tiny_totals():
    # a few totals worked out by hand, so that the formulas above are checked too
    expected = {"mlp": 269_322, "lenet": 105_506, "lenet5": 61_706, "lenet_digits": 105_506,
                "resnet_tiny": 19_954, "transformer_tiny": 45_568, "gpt_mini": 813_824,
                "vit_tiny": 26_346, "dqn_atari": 1_693_362, "gnn": 23_063,
                "capsnet": 252_736}
    for name, n in expected.items():
        assert formula(name) == n, name


BOOK = {"resnet18": 11_689_512, "resnet50": 25_557_032, "gpt2_small": 124_439_808,
        "vit_b16": 86_567_656, "transformer_base": 63_082_496, "alexnet": 61_100_840,
        "googlenet": 6_624_904,  # vgg16 (138M) is built without drawing, in test_classic_cnns
        "capsnet_mnist": 8_215_568}  # Sabour et al.'s network, as usually counted


def test_vgg16_and_googlenet_aux_formulas() -> None:
    from lbdl_graph.frontends.zoo import GoogLeNetConfig

    assert formula("vgg16") == 138_357_544
    assert googlenet(GoogLeNetConfig(aux_logits=True)) == 13_004_888  # torchvision, aux heads


@pytest.mark.parametrize("name", sorted(BOOK))
def test_book_model_parameter_count_and_trace(name):
    entry = ZOO[name]
    assert formula(name) == BOOK[name]
    model = entry.model()
    assert model.num_parameters() == BOOK[name]
    g = entry.trace(model)
    assert {v.name: tuple(v.type.shape) for v in g.outputs} == entry.outputs
    assert g.inputs[0].type.shape[0] == "N"
    # a tied weight is one graph parameter; buffers are not trainable
    assert sum(p.data.size for p in g.params if p.trainable) == BOOK[name]
    assert all(p.data.dtype == np.float32 for p in g.params if p.trainable)


def test_bert_base_count():
    from lbdl_graph.frontends.zoo.bert import BERT_BASE

    c, d = BERT_BASE, BERT_BASE.d_model  # bert-base-uncased: 109,482,240 with the pooler
    assert ((c.vocab_size + c.max_position + c.type_vocab_size) * d + norm(d)
            + c.num_layers * block(d, c.d_ff) + lin(d, d)) == 109_482_240


def test_gpt2_small_exact_count_and_tying():
    c = ZOO["gpt2_small"].config
    assert (c.num_layers, c.d_model, c.num_heads, c.vocab_size, c.context) == (12, 768, 12,
                                                                                50257, 1024)
    assert gpt_params(c) == 124_439_808 == gpt(c)
    model = ZOO["gpt_mini"].model()
    assert model.head.weight is model.tok_emb.weight
    sd = model.state_dict()
    assert "head.weight" in sd and sd["head.weight"] is sd["tok_emb.weight"]


def test_gpt2_initialisation_scales():
    model = ZOO["gpt_mini"].model()
    layers = model.config.num_layers
    assert abs(model.tok_emb.weight.data.std() - 0.02) < 0.002
    assert abs(model.pos_emb.weight.data.std() - 0.01) < 0.002
    fc2 = model.layers[0].mlp.fc2.weight.data
    assert abs(fc2.std() - 0.02 / math.sqrt(2 * layers)) < 0.001
    assert not model.layers[0].mlp.fc1.bias.data.any()
    assert abs(model.layers[1].attn.in_proj_weight.data.std() - 0.02) < 0.002
