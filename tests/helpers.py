"""Tiny analytic models and inputs shared by several test modules."""
import torch


class TinyEmbedder:
    """A fixed random linear embedding of a 4x4-pooled image (any size works)."""

    def __init__(self, seed=0, dim=6):
        g = torch.Generator().manual_seed(seed)
        self.w = torch.randn(3 * 4 * 4, dim, generator=g)

    def __call__(self, x):
        pooled = torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
        return pooled @ self.w + 0.1


class MeanColour(torch.nn.Module):
    """Embedding = mean RGB of 4 quadrants (12-d): deterministic, sensitive to occlusion."""

    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)


class BrightSquareNet(torch.nn.Module):
    """Logit of class 1 = mean ReLU activation of a conv channel that fires on bright pixels;
    class 0 = its negative. Grad-CAM on ``conv`` must peak where the image is bright."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2, 3, padding=1, bias=True)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0] = 1.0 / 27
            self.conv.bias[:] = torch.tensor([-0.5, 0.0])

    def forward(self, x):
        a = torch.relu(self.conv(x))
        s = a[:, 0].mean(dim=(1, 2))
        return torch.stack([-s, s], dim=1)


def _images(seed=0, size=24):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(3, size, size, generator=g), torch.rand(3, size, size, generator=g)
