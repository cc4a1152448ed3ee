"""Training settings shared by the tiny sweep grids of these tests (3 epochs on ml-100k)."""

TRAIN = {
    "epochs": 3,
    "eval_every": 1,
    "selection": "fixed_epochs",
    "patience": None,
    "ks": [10, 50],
    "lr": 0.01,
    "batch_size": 4096,
}
