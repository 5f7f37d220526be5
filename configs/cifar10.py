"""CIFAR-10 pretraining preset: the paper's recipe with K = 100 and lambda 4 -> 1.5 (App. B.2).

python train.py --dataset=cifar10
python train.py --config=configs/cifar10.py:smoke   # a two-epoch narrow check

Weight decay is coupled, as in the PyTorch SGD of the MoCo recipe the paper follows (L2 added to
the gradient before momentum, every parameter decayed; configs/common.py).
"""

from carl_tf.configs.common import paper_recipe


def get_config(arg: str | None = None):
    c = paper_recipe()
    c.dataset = "cifar10"
    c.image_size = 32
    c.num_prototypes = 100  # about ten times the classes (Fig. 3)
    c.kl_start, c.kl_end = 4.0, 1.5  # decayed over half the epochs (common.py)
    if arg == "smoke":
        c.epochs, c.backbone_width, c.knn_every, c.train_subset = 2, 8, 1, 2048
    elif arg:
        raise ValueError(f"unknown preset argument {arg!r}; use smoke or none")
    return c
