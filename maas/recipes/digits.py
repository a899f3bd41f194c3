"""A digit classifier trained on scikit-learn's bundled 8x8 digits (the classic MNIST-style task).

Fixed seed and a stratified held-out test split, so every build trains the same model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEED = 0
TEST_FRACTION = 0.25
PIXEL_MAX = 16.0
LABELS = [str(d) for d in range(10)]
TASK = "image-classification"


@dataclass
class DigitsData:
    x_train: np.ndarray  # (n, 8, 8) raw pixels 0-16
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_data() -> DigitsData:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.images, digits.target, test_size=TEST_FRACTION, random_state=SEED, stratify=digits.target
    )
    return DigitsData(x_train, y_train, x_test, y_test)


def train(data: DigitsData, epochs: int = 40):
    """A small MLP (64-128-64-10): ~17k weights, trains in a few seconds on a CPU."""
    import torch

    torch.manual_seed(SEED)
    model = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(64, 128),
        torch.nn.ReLU(),
        torch.nn.Linear(128, 64),
        torch.nn.ReLU(),
        torch.nn.Linear(64, 10),
    )
    x = torch.tensor(data.x_train / PIXEL_MAX, dtype=torch.float32)
    y = torch.tensor(data.y_train, dtype=torch.long)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(SEED)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(64):
            optimizer.zero_grad()
            loss_fn(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval()
