"""The weather blocks: cross-attention over weather tokens selects; the original design's form cannot."""

import torch

from stmgt.nn.blocks.weather_attention import DocumentWeatherAttention, WeatherCrossAttention


def test_cross_attention_weather_is_not_degenerate_but_document_form_is():
    """The document's keys are identical per step, so its attention output cannot depend on the node."""
    torch.manual_seed(0)
    h = torch.randn(2, 4, 5, 16)
    w = torch.randn(2, 4, 3)
    doc = DocumentWeatherAttention(16, 3, 2, 0.0).eval()
    out_doc, _ = doc.cross_attn(h.reshape(8, 5, 16), *(2 * [doc.weather_proj(w).unsqueeze(2).expand(2, 4, 5, 16)
                                                           .reshape(8, 5, 16)]))
    assert torch.allclose(out_doc, out_doc[:, :1].expand_as(out_doc), atol=1e-6)  # same for every node
    ours = WeatherCrossAttention(16, 3, 2, 0.0).eval()
    assert ours(h, w).shape == h.shape  # the output alone unless asked
    out, att = ours(h, w, return_attention=True)  # att [B, S*N, L]
    assert out.shape == h.shape
    assert att.shape == (2, 20, 4) and not torch.allclose(att, torch.full_like(att, 0.25), atol=1e-3)
