"""CIFAR-100 pretraining preset: K = 1000 prototypes (Fig. 3: ~10x the classes), lambda 4 -> 1.5.

python train.py --dataset=cifar100
"""

from carl_tf.configs.common import paper_recipe


def get_config(arg: str | None = None):
    c = paper_recipe()
    c.dataset = "cifar100"
    c.image_size = 32
    c.num_prototypes = 1000
    c.kl_start, c.kl_end = 4.0, 1.5  # decayed over half the epochs (common.py)
    if arg == "smoke":
        c.epochs, c.backbone_width, c.knn_every, c.train_subset = 2, 8, 1, 2048
    elif arg:
        raise ValueError(f"unknown preset argument {arg!r}; use smoke or none")
    return c
