"""The paper's pretraining recipe (CARL Appendix A-B), every field a preset or flag can set.

Each `configs/<dataset>.py` starts from `paper_recipe()` and states what differs for its data.
"""

import ml_collections

from carl_tf.evaluation.settings import COLLAPSE_FRACTION, KNN_K, KNN_TEMPERATURE


def paper_recipe() -> ml_collections.ConfigDict:
    """ResNet-18, batch 256, SGD(0.9), lr 0.03 x batch/256 with cosine decay, 200 epochs."""
    c = ml_collections.ConfigDict()
    # Data: a TFDS name, folder:PATH, npz:PATH or digits (see carl_tf.data).
    c.dataset = "cifar10"
    c.data_dir = ""  # TFDS data_dir; "" is TFDS's default.
    c.download = False  # let TFDS download and prepare a missing dataset
    c.train_split = "train"
    c.knn_train_split = "train"  # labelled bank of the kNN monitor
    c.knn_test_split = "test"  # labelled queries of the kNN monitor
    c.holdout = 0.0  # folder/npz/digits: fraction held out as their 'test' split
    c.train_subset = 0  # >0: pretrain on a fixed subset of this many images
    c.split_seed = 0  # fixes the holdout and the subset, whatever `seed` a run uses
    c.image_size = 32
    # Sources whose decoded images fit this many MiB are held in memory; larger ones are
    # streamed from disk, and the kNN monitor then reads its bank and queries batch by batch.
    c.memory_budget_mb = 4096.0

    # The objective: "carl" (the paper's) or "simclr" (NT-Xent at simclr_temperature, the
    # baseline of Table 1, on the same encoder, views and optimizer; the fields of the assigner,
    # lambda and the collapse guard then do nothing). 0.2 is solo-learn's CIFAR SimCLR value.
    c.method = "carl"
    c.simclr_temperature = 0.2

    # Encoder f = backbone + BYOL-style projection head (Appendix A), assigner with K prototypes.
    c.backbone = "resnet18"
    c.backbone_width = 64
    c.projection_hidden_dim = 2048
    c.projection_hidden_layers = 2
    c.projection_dim = 128
    c.num_prototypes = 100
    c.symmetric = False  # the paper's loss is one-sided (Fig. 1)
    # Extensions, not in the paper, off by default (CARL(target_temperature=, unit_prototypes=,
    # cosine_temperature=)): targets of the consistency sharpened as softmax(energies / T),
    # prototypes used at unit norm (CARP), energies cos(z, c_k) / T (SwAV, CARP).
    c.target_temperature = 1.0
    c.unit_prototypes = False
    c.cosine_temperature = 0.0
    # Extensions from CARP, not in the paper, off at 0 (CARL(target_momentum=,
    # prototype_block_size=)): targets from an EMA of the encoder (backbone, head and
    # prototypes) with this momentum, e.g. 0.99, TensorFlow backend only; and, for large K,
    # the prototypes split at random every step into blocks of this size (a divisor of
    # num_prototypes), each with its own softmax, consistency and KL, averaged.
    c.target_momentum = 0.0
    c.prototype_block_size = 0
    # The prototypes' initial spread, as a multiple of Keras's glorot-uniform (1: its own).
    # The paper does not give its initialisation; PyTorch's nn.Linear default draws
    # uniform(+-1/sqrt(fan_in)), 0.54 of glorot's spread for 128 -> 100 prototypes. Kept at 1:
    # screened on CIFAR-10's ablation size, 0.54 and 0.25 learned slower in the first epochs
    # and 2 collapsed towards a few prototypes (docs/results.md, section 8.1).
    c.prototype_init_scale = 1.0

    # lambda_e of eq. 8: linear decay from kl_start (b) to kl_end (a) over kl_decay_epochs (E).
    c.kl_start = 4.0
    c.kl_end = 1.5

    # Optimisation (He et al. 2020, as Appendix A says).
    c.epochs = 200
    # E of eq. 8 is half the epochs (100 of 200, App. B); a reference, so --epochs moves it
    # too (--kl_decay_epochs still sets it).
    c.kl_decay_epochs = c.get_ref("epochs") // 2
    c.batch_size = 256
    c.learning_rate = 0.03  # at batch 256; the run uses learning_rate * batch_size / 256
    c.warmup_epochs = 0
    c.momentum = 0.9
    # Not given in the paper; 5e-4 is MoCo's CIFAR setting (He et al. 2020 follow-ups, solo-learn).
    c.weight_decay = 5e-4
    # The recipe is MoCo's, written for PyTorch's SGD, which adds the decay to the gradient
    # before momentum and decays every parameter: "coupled" and "all" are what the paper means.
    # Keras's SGD(weight_decay=) is "decoupled", about ten times weaker at momentum 0.9 (what
    # carl_tf trained with before weight_decay_mode existed); "kernels" spares BatchNorm, biases
    # and the prototypes (carl_tf.method.optimizer, docs/results.md section 8).
    c.weight_decay_mode = "coupled"
    c.weight_decay_on = "all"

    # Views (SimCLR, Chen et al. 2020a). Blur only at 96 px and up, as SimCLR does for CIFAR.
    c.crop_min_scale = 0.08
    c.blur_probability = 0.0
    # Multi-crop (SwAV, CARP): small views per image besides the two global ones, which learn to
    # predict the global views' assignments; 0 is the paper's two views. Each is a crop of
    # small_crop_min_scale-small_crop_max_scale of the image area, resized to small_crop_size.
    c.small_crops = 0
    c.small_crop_size = c.get_ref("image_size") // 2  # a reference: --image_size moves it too
    c.small_crop_min_scale = 0.05
    c.small_crop_max_scale = 0.14

    # Monitors.
    c.knn_every = 10  # epochs; 0 turns the online kNN monitor off
    # >0: the monitor's bank is a fixed subset of this many labelled images (split_seed), which
    # bounds its time and its features' memory on large datasets; 0: the whole bank split.
    c.knn_bank_size = 0
    c.knn_k = KNN_K  # the kNN protocol of the evaluation (carl_tf.evaluation.settings)
    c.knn_temperature = KNN_TEMPERATURE
    # Collapse: fewer than this fraction of min(K, batch) prototypes in use per batch warns;
    # collapse_patience such epochs in a row stop the run (exit 1, no export); 0 only warns.
    c.collapse_fraction = COLLAPSE_FRACTION
    c.collapse_patience = 2

    # Runtime.
    c.seed = 0
    c.strategy = "auto"
    # auto: mixed_bfloat16 on TPUs, on GPUs of compute capability 8.0 and up and on CPUs that
    # compute bfloat16 natively; mixed_float16 on GPUs of 7.x; float32 elsewhere
    # (carl_tf.run.precision, docs/distributed.md).
    c.precision = "auto"
    c.jit_compile = False
    return c


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    """The paper's recipe as a config file (`--dataset=SOURCE` without a preset of its own)."""
    if arg is not None:
        raise ValueError(f"the paper's recipe takes no argument, got {arg!r}")
    return paper_recipe()
