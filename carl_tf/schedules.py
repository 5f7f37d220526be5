"""The lambda_e schedule of CARL eq. 8: linear decay of the KL weight from b to a over E epochs."""


def linear_decay(epoch: int, start: float, end: float, decay_epochs: int) -> float:
    """Eq. 8: `lambda_e = b - (b - a) / E * e` for `e <= E`, else `a`.

    Args:
        epoch: zero-based epoch counter e.
        start: b, the weight at epoch 0.
        end: a, the weight from epoch E on.
        decay_epochs: E; 0 means the weight is `end` from the start.

    Returns:
        The KL weight for this epoch as a Python float.
    """
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if decay_epochs < 0:
        raise ValueError(f"decay_epochs must be >= 0, got {decay_epochs}")
    if decay_epochs == 0 or epoch >= decay_epochs:
        return float(end)
    return float(start - (start - end) / decay_epochs * epoch)
