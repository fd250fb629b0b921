"""CLIP's symmetric contrastive loss over image-text pairs (Radford et al. 2021)."""

from keras import ops

from zoo.losses._common import _float32, _two_views
from zoo.ops import l2_normalize

__all__ = ["clip"]


def clip(image_embeddings, text_embeddings, logit_scale, positives=None):
    """Symmetric InfoNCE of CLIP: each image picks its caption and each caption its image.

    From the paper's pseudocode: "logits = np.dot(I_e, T_e.T) * np.exp(t) [...]
    loss = (loss_i + loss_t)/2" with L2-normalised I_e, T_e and pairs on the diagonal.
    The multiplier is taken as given; learning and clamping its log is the model's job.

    With `positives`, every marked pair counts as a match, as UniCL does for image-text pairs that share a
    label: row i's loss is the mean over its positives j of -log softmax(logits[i])[j] (and so for columns).
    A batch where one caption ("smileys and emotion") describes several images, or one image comes with
    several captions, then asks for no impossible choice between them. The identity gives CLIP exactly.

    Args:
        image_embeddings: tensor (N, D). image tower outputs.
        text_embeddings: tensor (N, D). text tower outputs, row i describing image i.
        logit_scale: float scalar or scalar tensor. the multiplier exp(t), e.g. 1/0.07.
        positives: bool tensor (N, N) or None. positives[i, j]: caption j describes image i; must hold on the
            diagonal. None: the identity.

    Reference:
        Radford et al. Learning Transferable Visual Models From Natural Language Supervision.
        ICML 2021. Yang et al. Unified Contrastive Learning in Image-Text-Label Space. CVPR 2022.
    """
    images, texts = _two_views(
        image_embeddings, text_embeddings, "image_embeddings", "text_embeddings"
    )
    logits = _float32(logit_scale) * ops.matmul(
        l2_normalize(images), ops.transpose(l2_normalize(texts))
    )  # (N, N)
    if positives is None:
        matched = ops.diagonal(logits)
        image_to_text = ops.mean(ops.logsumexp(logits, axis=1) - matched)
        text_to_image = ops.mean(ops.logsumexp(logits, axis=0) - matched)
        return (image_to_text + text_to_image) / 2.0
    weights = ops.cast(positives, "float32")  # (N, N)
    matched = ops.sum(weights * logits, axis=1) / ops.sum(weights, axis=1)  # mean positive logit per row
    image_to_text = ops.mean(ops.logsumexp(logits, axis=1) - matched)
    matched = ops.sum(weights * logits, axis=0) / ops.sum(weights, axis=0)  # per column
    text_to_image = ops.mean(ops.logsumexp(logits, axis=0) - matched)
    return (image_to_text + text_to_image) / 2.0
