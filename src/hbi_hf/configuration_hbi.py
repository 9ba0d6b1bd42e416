"""Configurations of HBI (CVPR 2023) / HBI V2 (TPAMI 2024) and of the Banzhaf-interaction estimator."""

import math

from transformers import CLIPConfig, CLIPTextConfig, CLIPVisionConfig, PreTrainedConfig
from transformers.utils import logging

logger = logging.get_logger(__name__)

NUM_LEVELS = 3
"""Entity (frames / words), action (clips / phrases) and event (segments / paragraphs)."""

ROW_COLUMN_STATISTICS = ("best", "second", "third", "mean")
"""The statistics of a cell's row and of its column that the `"row_column"` estimator features subtract from it."""
# channels the estimator's encoding convolution reads for each `input_features` choice
ESTIMATOR_INPUT_CHANNELS = {"similarity": 1, "row_column": 1 + 2 * len(ROW_COLUMN_STATISTICS)}
# the fields that shape the estimator's weights: a saved estimator loads only into the same architecture
ESTIMATOR_ARCHITECTURE_FIELDS = ("hidden_size", "kernel_size", "input_features", "use_attention")
ESTIMATOR_NORMALISATION_FIELDS = (
    "input_mean",
    "input_std",
    "output_scale",
    "word_count_exponent",
    "frame_count_exponent",
)
"""Fields of [`HBIBanzhafEstimatorConfig`] fitted to the training data, not part of the architecture."""
MERGED_TOKEN_ORDERS = ("temporal", "score")
"""Orders of merged tokens ([`HBIConfig`] `merged_token_order`): their centres' positions, or the official code's
decreasing centre score."""
BANZHAF_TEACHERS = ("exact", "monte_carlo", "estimator", "none")
"""The sources of the Banzhaf interactions that L_I (Eq. 8) distils ([`HBIConfig`] `banzhaf_teacher`)."""
OBJECTIVES = ("official", "sharpened")
"""How L_I (Eq. 8) and L_D (Eq. 15) are reduced and on which scores ([`HBIConfig`] `objective`)."""


class HBIBanzhafEstimatorConfig(PreTrainedConfig):
    r"""
    Configuration of [`HBIBanzhafEstimator`], the small network that maps a frame x word similarity matrix to its
    Banzhaf-interaction matrix (spec §2.3). The same architecture serves as the trainable prediction head R of every
    hierarchy level (spec §2.4).

    Args:
        hidden_size (`int`, *optional*, defaults to 64):
            Channels of the encoding convolution and width of the single-head self-attention over the cells.
        kernel_size (`int`, *optional*, defaults to 3):
            Kernel of the encoding and decoding convolutions (padding keeps the matrix shape). With 1 the
            convolutions read each cell alone (the `"row_column"` features still carry its row and column), and the
            encoding of `"row_column"` features is computed once per row and column: the fastest estimator.
        input_features (`str`, *optional*, defaults to `"similarity"`):
            What the encoding convolution reads per cell. `"similarity"` (the paper's and official estimator): the
            similarity alone. `"row_column"`: nine channels that say where the cell stands in its word's row and its
            frame's column ([`banzhaf_cell_features`]: the similarity, and the similarity minus the best, second
            best, third best and mean of its row, and of its column). An interaction is mostly decided by how far the
            cell is from the few best cells of its row and column, which the paper's network cannot see: with them a
            network without attention is more accurate and far faster.
        use_attention (`bool`, *optional*, defaults to `True`):
            The single-head self-attention over the cells between the two convolutions (paper and official code).
            `False` leaves convolution -> ReLU -> convolution.
        initializer_gain (`float`, *optional*, defaults to 1.414):
            Gain of the Xavier-uniform initialisation of the attention matrices Q, K, V.
        input_mean (`float`, *optional*, defaults to 0.0):
            Subtracted from the similarities before the network sees them.
        input_std (`float`, *optional*, defaults to 1.0):
            Divides the centred similarities (with `input_mean`: the standardisation of the training matrices).
        output_scale (`float`, *optional*, defaults to 1.0):
            Multiplies the network's output to give interactions in label units.
        word_count_exponent (`float`, *optional*, defaults to 0.0):
            The output is also multiplied by `valid_words ** -word_count_exponent`: interactions shrink with the size
            of the game (the WTI weights spread over more players), which the network, averaging over cells with its
            attention, cannot see. Fitted with `frame_count_exponent` on the training labels
            (`hbi_hf.estimator_training.fit_estimator_normalisation`).
        frame_count_exponent (`float`, *optional*, defaults to 0.0):
            The same for `valid_frames`.
        is_trained (`bool`, *optional*, defaults to `False`):
            Whether the weights were fitted to Banzhaf labels: set by
            [`~hbi_hf.estimator_training.train_estimator`] and by the conversion of an official estimator. An HBI model
            refuses a never-trained estimator as its teacher (`banzhaf_teacher="estimator"` in [`HBIConfig`]). In a
            model's `estimator_config` it describes the model's teacher, not its prediction heads R.
        The defaults leave inputs and outputs unchanged (as the official estimator and converted checkpoints).
        [`HBIBanzhafEstimator`] computes `interaction = output_scale * valid_words ** -word_count_exponent *
        valid_frames ** -frame_count_exponent * network((similarity - input_mean) / input_std)` and trains the
        network on labels divided by the same factor.

    Example:

    ```python
    >>> from hbi_hf import HBIBanzhafEstimator, HBIBanzhafEstimatorConfig

    >>> estimator = HBIBanzhafEstimator(HBIBanzhafEstimatorConfig())
    ```"""

    model_type = "hbi_banzhaf_estimator"

    hidden_size: int = 64
    kernel_size: int = 3
    input_features: str = "similarity"
    use_attention: bool = True
    initializer_gain: float = 1.414
    input_mean: float = 0.0
    input_std: float = 1.0
    output_scale: float = 1.0
    word_count_exponent: float = 0.0
    frame_count_exponent: float = 0.0
    is_trained: bool = False

    def __post_init__(self, **kwargs):
        if self.hidden_size < 1:
            raise ValueError(f"hidden_size must be a positive integer; got {self.hidden_size}")
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer; got {self.kernel_size}")
        if self.input_features not in ESTIMATOR_INPUT_CHANNELS:
            raise ValueError(
                f"input_features must be one of {sorted(ESTIMATOR_INPUT_CHANNELS)}; got {self.input_features!r}"
            )
        for name in ("input_std", "output_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive; got {getattr(self, name)}")
        super().__post_init__(**kwargs)


class HBIConfig(PreTrainedConfig):
    r"""
    Configuration of [`HBIModel`] and its task heads. Defaults reproduce the paper's MSR-VTT retrieval setting on
    `openai/clip-vit-base-patch32` (spec §1, §3, §5, §8); the official code's values are noted where they differ.

    Args:
        text_config (`dict` or `CLIPTextConfig`, *optional*):
            The CLIP text tower. Defaults to CLIP ViT-B/32's text tower.
        vision_config (`dict` or `CLIPVisionConfig`, *optional*):
            The CLIP image tower, applied to every frame. Defaults to CLIP ViT-B/32's image tower.
        estimator_config (`dict` or `HBIBanzhafEstimatorConfig`, *optional*):
            Architecture of the frozen Banzhaf-interaction estimator (the teacher of Eq. 8) and of the per-level
            prediction heads R.
        banzhaf_teacher (`str`, *optional*, defaults to `"exact"`):
            Where the Banzhaf interactions I, the targets of L_I (Eq. 8), come from (docs/banzhaf.md compares them):
            `"exact"`: the exact interactions of the detached matched-pair similarity of each level, computed for
            every batch in closed form ([`~hbi_hf.banzhaf.closed_form_banzhaf_interaction`]; about 1 ms for a batch
            of 8 at 32 x 12);
            `"monte_carlo"`: computed for every batch from the detached matched-pair similarity of each level with the
            unbiased sampler ([`~hbi_hf.banzhaf.sampled_banzhaf_interaction`], `banzhaf_num_samples` coalitions);
            `"estimator"`: a trained, frozen [`HBIBanzhafEstimator`] (the paper's recipe), loaded from
            `estimator_name_or_path`; a never-trained one is refused with a `ValueError`;
            `"none"`: no Banzhaf term (L_I = 0, logged once).
        banzhaf_num_samples (`int`, *optional*, defaults to 200):
            Coalitions per (word, frame) pair of the `"monte_carlo"` teacher (official labels: 100 for the estimator,
            1000 for evaluation). Levels of at most 12 word + frame positions are enumerated exactly instead.
        banzhaf_game_scale (`float`, *optional*, defaults to 1000.0):
            Multiplies the similarities before the game is played (official: 1000), hence every interaction: the
            inverse temperature of the teacher distributions of Eq. 8. At 1000 they are peaked, at 10 nearly uniform
            (measured in docs/banzhaf.md). A hyperparameter, not a constant of the method.
        banzhaf_head_input_scale (`float`, *optional*, defaults to 1.0):
            Multiplies the similarity that the prediction heads R read (Eq. 8; 1 is the paper's), the only path from
            L_I to the encoder. Measured on the demo model at initialisation under `objective="sharpened"`
            (docs/banzhaf.md), the encoder gradient of L_I relative to that of L_C is about 1e-4 at 1, 1 % at 100,
            4 % at 200 and 107 % at 1000; at 100 and above the demo's contrastive loss stayed at chance while it fell
            without the term (likely because a constant similarity matrix makes the teacher uniform and L_I nearly 0:
            a strong L_I pushes the encoder there).
        estimator_name_or_path (`str`, *optional*):
            A saved, trained [`HBIBanzhafEstimator`] (folder or Hub id) that [`HBIForRetrieval.from_clip`] loads into
            the teacher; giving it selects `banzhaf_teacher="estimator"`.
        clip_name_or_path (`str`, *optional*):
            The CLIP checkpoint (Hub id or local folder) whose weights the towers were initialised from; set by
            [`HBIForRetrieval.from_clip`] and kept through fine-tuning, so a model card can name its `base_model`.
            None: the towers were randomly initialised.
        projection_dim (`int`, *optional*, defaults to 512):
            Width D of the CLIP joint space, of every token of every level, and of the temporal transformer.
        logit_scale_init_value (`float`, *optional*, defaults to 2.6592):
            Initial log of the learnable CLIP logit scale (used only with `learnable_temperature=True`).
        num_frames (`int`, *optional*, defaults to 12):
            Frames per video N_v (paper: 12 for MSR-VTT, 64 for ActivityNet, 32 for DiDeMo).
        max_words (`int`, *optional*, defaults to 32):
            Text tokens per caption N_t, start and end tokens included (paper: 32 for MSR-VTT; official README 24).
        temporal_num_layers (`int`, *optional*, defaults to 4):
            Depth of the temporal transformer over frame embeddings (initialised from the first CLIP text layers).
        temporal_num_attention_heads (`int`, *optional*):
            Heads of the temporal transformer. Defaults to the heads of a CLIP text layer at width `projection_dim`
            (the text tower's heads when its width is `projection_dim`, as in every OpenAI CLIP: 8 for ViT-B/32 and
            ViT-B/16, 12 for ViT-L/14), so that the first text layers can initialise it.
        temporal_intermediate_size (`int`, *optional*):
            Feed-forward width of the temporal transformer. Defaults likewise to the text tower's feed-forward width
            scaled to `projection_dim` (2048 for ViT-B, 3072 for ViT-L/14).
        temporal_max_position_embeddings (`int`, *optional*, defaults to 77):
            Rows of the frame position table (initialised from CLIP's text position table); bounds `num_frames`.
        temporal_layer_norm_eps (`float`, *optional*, defaults to 1e-12):
            LayerNorm epsilon inside the temporal transformer (official code: 1e-12, CLIP: 1e-5).
        cluster_mode (`str`, *optional*, defaults to `"count"`):
            `"count"`: the action / event levels have the token counts below (paper, Table VI) for a full-length input
            (`max_words` words, `num_frames` frames), and proportionally fewer for a shorter one: an item with `n`
            valid tokens below gets `clamp(ceil(n * count / reference), 1, count)` tokens, the reference being
            `max_words` / `num_frames` at the action level and the action count at the event level. The paper's 16
            phrases were meant for 32 positions, padding included; with padding excluded, fixed counts would give a
            12-token caption one phrase per word (nothing merges). See [`HBIConfig.merged_token_counts`].
            `"ratio"`: they have `max(ceil(n * ratio), 1)` tokens, `n` being `max_words` / `num_frames` at the action
            level (the length the official code pads every input to) and the action count at the event level; an
            input padded to another length keeps these counts, so its scores do not depend on its padding.
        video_cluster_counts (`list[int]`, *optional*, defaults to `[6, 2]`):
            Clips (action level) and segments (event level) per video in `"count"` mode.
        text_cluster_counts (`list[int]`, *optional*, defaults to `[16, 4]`):
            Phrases (action level) and paragraphs (event level) per caption in `"count"` mode.
        video_cluster_ratios (`list[float]`, *optional*, defaults to `[0.25, 0.5]`):
            Video merge ratios of `"ratio"` mode (official retrieval: 0.25, 0.5; QA: 0.25, 0.25).
        text_cluster_ratios (`list[float]`, *optional*, defaults to `[0.25, 0.5]`):
            Text merge ratios of `"ratio"` mode (official retrieval: 0.25, 0.5; QA: 0.25, 0.125).
        dpc_knn_k (`int`, *optional*, defaults to 3):
            Neighbours K of the DPC-KNN local density (Eq. 9), the token itself included.
        merged_token_order (`str`, *optional*, defaults to `"temporal"`):
            Order of the merged tokens of the action and event levels, which the next merge's temporal convolution
            reads: `"temporal"`, the order of their cluster centres in the sequence; `"score"`, by decreasing DPC-KNN
            centre score `rho * xi`, as the official code orders them (converted official checkpoints use it; see
            [`dpc_knn_cluster`]). The action level's own similarity does not depend on the order, the event level's
            does.
        merge_num_attention_heads (`int`, *optional*, defaults to 8):
            Heads of the attention refinement of merged tokens (Eq. 11).
        representation_reconstruction (`bool`, *optional*, defaults to `True`):
            `True`: HBI V2 (TPAMI 2024), tokens of every level are mixed with a query-conditioned cross-modal
            component (Eqs. 2-5) before the similarity. `False`: HBI (CVPR 2023), the method of the released
            official checkpoints.
        objective (`str`, *optional*, defaults to `"official"`):
            How the Banzhaf loss L_I (Eq. 8) and the self-distillation L_D (Eq. 15) are reduced, and on which scores
            (docs/training.md, "The objective"). L_C (Eq. 13) is the same in both: the symmetric cross-entropy of
            S / tau over the batch.
            `"official"`: the official code's objective (what produced the paper's numbers), with its defects fixed.
            L_I: `KL(teacher || head)` per cell, the softmaxes over the frames of each word and over the words of
            each frame (the official code's second term softmaxes over the batch, a `.T` bug), summed over the valid
            cells of both directions and divided by `batch x words x frames` of the level's padded shape
            ([`HBIConfig.level_shape`]: `max_words x num_frames` at the entity level), as `F.kl_div(...,
            reduction="mean")` over the official padded tensors. Padded cells are in no softmax and add 0 (the
            official code lets them into the softmaxes); the denominator is the configured shape, not the batch's,
            so the loss does not change with how far a batch is padded. L_D: `KL(entity || coarser level)` on the
            raw `(batch, batch)` similarities S (temperature 1), rows and columns, each the mean over all `B x B`
            elements; the entity teacher is not detached (it also learns from the coarser levels). So alpha and beta
            are the official `--skl` and `--kl`: the official MSR-VTT command's `--skl 1 --kl 2` is alpha = 1,
            beta = 2, the defaults.
            `"sharpened"`: the objective hbi-hf trained with before (much stronger auxiliary terms). L_I: the same
            KLs, each summed within its distribution and averaged over the distributions of the batch (alpha = 1 is
            the official `--skl` = valid frames on the per-word term plus valid words on the per-frame term, 12 and
            32 at MSR-VTT's entity level). L_D: on the logits S / tau (100x sharper at tau = 0.01), summed within
            each row (column) and averaged over rows (columns), i.e. B times the official mean, the entity teacher
            detached.
        banzhaf_loss_weight (`float`, *optional*, defaults to 1.0):
            alpha of Eq. 14, the weight of the Banzhaf-interaction loss L_I at every level: the official `--skl`
            under `objective="official"` (official MSR-VTT, ActivityNet and MSRVTT-QA runs: 1).
        distillation_loss_weight (`float`, *optional*, defaults to 2.0):
            beta of Eq. 16, the weight of the entity->action and entity->event self-distillation (four KL terms):
            the official `--kl` under `objective="official"` (official MSR-VTT, ActivityNet and MSRVTT-QA runs: 2;
            the paper's text says 1, its numbers come from the official runs).
        temperature (`float`, *optional*, defaults to 0.01):
            Fixed temperature tau of the contrastive loss (Eq. 13) and of the distillation distributions.
        learnable_temperature (`bool`, *optional*, defaults to `False`):
            Use CLIP's learnable logit scale (clamped at 100) instead of the fixed `temperature` (official code).
        similarity_level_weights (`list[float]`, *optional*, defaults to `[1.0, 0.0, 0.0]`):
            Weights of the entity, action and event similarities fused into the retrieval score at inference
            (official retrieval default: entity only). Levels with weight 0 are not computed at inference.
        initializer_range (`float`, *optional*, defaults to 0.02):
            Standard deviation of the normal initialisation of the HBI modules.
        qa_projection_dim (`int`, *optional*, defaults to 2048):
            [`HBIForVideoQA`]: width of the projections of the pooled video and question representations of every
            level before they are concatenated (official: 2048).
        qa_hidden_size (`int`, *optional*, defaults to 8192):
            [`HBIForVideoQA`]: hidden width of the answer MLP over the concatenation (official: 8192).
        qa_dropout (`float`, *optional*, defaults to 0.1):
            [`HBIForVideoQA`]: dropout on the concatenated representation (official: 0.1).
        qa_level_weights (`list[float]`, *optional*, defaults to `[0.4, 0.4, 0.2]`):
            [`HBIForVideoQA`]: weights of the entity, action and event answer logits fused at inference (official
            `--rate 0.4 0.4 0.2`).
        qa_loss_weight (`float`, *optional*, defaults to 2.5):
            [`HBIForVideoQA`]: lambda of Eq. 16, the weight of the answer cross-entropy (paper, Fig. 8: 2.5).
        caption_loss_weight (`float`, *optional*, defaults to 3.3):
            [`HBIForCaptioning`]: lambda of Eq. 16, the weight of the captioning cross-entropy (paper, Fig. 8: 3.3).
        caption_decoder_num_layers (`int`, *optional*, defaults to 1):
            [`HBIForCaptioning`]: transformer decoder layers (paper: one).
        caption_decoder_num_attention_heads (`int`, *optional*, defaults to 8):
            [`HBIForCaptioning`]: heads of the decoder's self- and cross-attention.
        caption_decoder_intermediate_size (`int`, *optional*, defaults to 2048):
            [`HBIForCaptioning`]: feed-forward width of the decoder.
        caption_dropout (`float`, *optional*, defaults to 0.1):
            [`HBIForCaptioning`]: dropout inside the decoder.

    Example:

    ```python
    >>> from hbi_hf import HBIConfig, HBIForRetrieval

    >>> config = HBIConfig(representation_reconstruction=False)  # HBI (CVPR 2023)
    >>> model = HBIForRetrieval(config)
    ```"""

    model_type = "hbi"
    sub_configs_defaults = {
        "text_config": CLIPTextConfig,
        "vision_config": CLIPVisionConfig,
        "estimator_config": HBIBanzhafEstimatorConfig,
    }

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    estimator_config: dict | PreTrainedConfig | None = None
    banzhaf_teacher: str = "exact"
    banzhaf_num_samples: int = 200
    banzhaf_game_scale: float = 1000.0
    banzhaf_head_input_scale: float = 1.0
    estimator_name_or_path: str | None = None
    clip_name_or_path: str | None = None
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592
    num_frames: int = 12
    max_words: int = 32
    temporal_num_layers: int = 4
    temporal_num_attention_heads: int | None = None
    temporal_intermediate_size: int | None = None
    temporal_max_position_embeddings: int = 77
    temporal_layer_norm_eps: float = 1e-12
    cluster_mode: str = "count"
    video_cluster_counts: list[int] | tuple[int, ...] = (6, 2)
    text_cluster_counts: list[int] | tuple[int, ...] = (16, 4)
    video_cluster_ratios: list[float] | tuple[float, ...] = (0.25, 0.5)
    text_cluster_ratios: list[float] | tuple[float, ...] = (0.25, 0.5)
    dpc_knn_k: int = 3
    merged_token_order: str = "temporal"
    merge_num_attention_heads: int = 8
    representation_reconstruction: bool = True
    objective: str = "official"
    banzhaf_loss_weight: float = 1.0
    distillation_loss_weight: float = 2.0
    temperature: float = 0.01
    learnable_temperature: bool = False
    similarity_level_weights: list[float] | tuple[float, ...] = (1.0, 0.0, 0.0)
    initializer_range: float = 0.02
    qa_projection_dim: int = 2048
    qa_hidden_size: int = 8192
    qa_dropout: float = 0.1
    qa_level_weights: list[float] | tuple[float, ...] = (0.4, 0.4, 0.2)
    qa_loss_weight: float = 2.5
    caption_loss_weight: float = 3.3
    caption_decoder_num_layers: int = 1
    caption_decoder_num_attention_heads: int = 8
    caption_decoder_intermediate_size: int = 2048
    caption_dropout: float = 0.1

    def __post_init__(self, **kwargs):
        self.video_cluster_counts = [int(n) for n in self.video_cluster_counts]
        self.text_cluster_counts = [int(n) for n in self.text_cluster_counts]
        self.video_cluster_ratios = [float(r) for r in self.video_cluster_ratios]
        self.text_cluster_ratios = [float(r) for r in self.text_cluster_ratios]
        self.similarity_level_weights = [float(w) for w in self.similarity_level_weights]
        self.qa_level_weights = [float(w) for w in self.qa_level_weights]
        self._derive_temporal_sizes()
        self._validate_hbi_fields()
        self._validate_task_fields()
        super().__post_init__(**kwargs)
        self._validate_against_text_tower()

    def _validate_against_text_tower(self) -> None:
        """`max_words` tokens must have position embeddings in the text tower (else the first forward pass fails)."""
        positions = self.text_config.max_position_embeddings
        if self.max_words > positions:
            raise ValueError(
                f"max_words ({self.max_words}) is more than the text tower's max_position_embeddings ({positions}); "
                "lower max_words or give text_config more positions"
            )

    def _derive_temporal_sizes(self) -> None:
        """Unset temporal transformer sizes take the shape of a CLIP text layer at width `projection_dim`: the text
        tower's head width and feed-forward ratio (its heads and feed-forward width when it is `projection_dim` wide)."""
        text = self.text_config if self.text_config is not None else CLIPTextConfig()
        if isinstance(text, dict):
            text = CLIPTextConfig(**text)
        if self.temporal_num_attention_heads is None:
            head_dim = text.hidden_size // text.num_attention_heads
            self.temporal_num_attention_heads = max(self.projection_dim // head_dim, 1)
        if self.temporal_intermediate_size is None:
            self.temporal_intermediate_size = self.projection_dim * text.intermediate_size // text.hidden_size

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        """As `PreTrainedConfig.from_dict`, then the same checks as a new config: transformers sets the keyword
        overrides of `from_pretrained` (e.g. `num_frames=100`) after construction, which would skip them."""
        result = super().from_dict(config_dict, **kwargs)
        config = result[0] if isinstance(result, tuple) else result
        config._validate_hbi_fields()
        config._validate_task_fields()
        config._validate_against_text_tower()
        return result

    @classmethod
    def from_clip_config(cls, clip_config: CLIPConfig, **overrides) -> "HBIConfig":
        r"""
        The configuration of an HBI model around a CLIP of any size: its towers, joint-space width and logit scale,
        the temporal transformer shaped like its text layers (see `temporal_num_attention_heads`).

        Args:
            clip_config ([`CLIPConfig`]): e.g. `CLIPConfig.from_pretrained("openai/clip-vit-large-patch14")`.
            overrides: any other [`HBIConfig`] field (a field given here wins over the CLIP-derived one).
        """
        settings = dict(
            text_config=clip_config.text_config.to_dict(),
            vision_config=clip_config.vision_config.to_dict(),
            projection_dim=clip_config.projection_dim,
            logit_scale_init_value=clip_config.logit_scale_init_value,
        )
        settings.update(overrides)
        return cls(**settings)

    def _validate_hbi_fields(self) -> None:
        if self.cluster_mode not in ("count", "ratio"):
            raise ValueError(f"cluster_mode must be 'count' or 'ratio'; got {self.cluster_mode!r}")
        for name in ("video_cluster_counts", "text_cluster_counts", "video_cluster_ratios", "text_cluster_ratios"):
            values = getattr(self, name)
            if len(values) != NUM_LEVELS - 1 or any(v <= 0 for v in values):
                raise ValueError(f"{name} must hold {NUM_LEVELS - 1} positive numbers (action, event); got {values}")
        if len(self.similarity_level_weights) != NUM_LEVELS:
            raise ValueError(
                f"similarity_level_weights must hold {NUM_LEVELS} weights (entity, action, event); "
                f"got {self.similarity_level_weights}"
            )
        if not any(self.similarity_level_weights):
            raise ValueError("similarity_level_weights must give at least one level a non-zero weight")
        if not 1 <= self.num_frames <= self.temporal_max_position_embeddings:
            raise ValueError(
                f"num_frames ({self.num_frames}) must be in [1, temporal_max_position_embeddings="
                f"{self.temporal_max_position_embeddings}], the rows of the frame position table: sample fewer frames "
                "or give the table more rows (temporal_max_position_embeddings)"
            )
        if self.max_words < 2:
            raise ValueError(f"max_words must leave room for the start and end tokens (>= 2); got {self.max_words}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be positive; got {self.temperature}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}; got {self.objective!r}")
        if self.banzhaf_teacher not in BANZHAF_TEACHERS:
            raise ValueError(f"banzhaf_teacher must be one of {BANZHAF_TEACHERS}; got {self.banzhaf_teacher!r}")
        if self.banzhaf_num_samples < 1:
            raise ValueError(f"banzhaf_num_samples must be a positive integer; got {self.banzhaf_num_samples}")
        if not self.banzhaf_game_scale > 0:
            raise ValueError(f"banzhaf_game_scale must be positive; got {self.banzhaf_game_scale}")
        if not self.banzhaf_head_input_scale > 0:
            raise ValueError(f"banzhaf_head_input_scale must be positive; got {self.banzhaf_head_input_scale}")
        if self.dpc_knn_k < 1:
            raise ValueError(f"dpc_knn_k must be >= 1; got {self.dpc_knn_k}")
        if self.merged_token_order not in MERGED_TOKEN_ORDERS:
            raise ValueError(
                f"merged_token_order must be one of {MERGED_TOKEN_ORDERS}; got {self.merged_token_order!r}"
            )
        for name in ("temporal_num_attention_heads", "merge_num_attention_heads"):
            if self.projection_dim % getattr(self, name) != 0:
                raise ValueError(f"projection_dim ({self.projection_dim}) must be divisible by {name}")

    def _validate_task_fields(self) -> None:
        if len(self.qa_level_weights) != NUM_LEVELS or not any(self.qa_level_weights):
            raise ValueError(
                f"qa_level_weights must hold {NUM_LEVELS} weights (entity, action, event), not all zero; "
                f"got {self.qa_level_weights}"
            )
        for name in ("qa_projection_dim", "qa_hidden_size", "caption_decoder_num_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer; got {getattr(self, name)}")
        for name in ("qa_dropout", "caption_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1); got {getattr(self, name)}")
        if self.projection_dim % self.caption_decoder_num_attention_heads != 0:
            raise ValueError(
                f"projection_dim ({self.projection_dim}) must be divisible by caption_decoder_num_attention_heads "
                f"({self.caption_decoder_num_attention_heads})"
            )

    def num_merged_tokens(self, modality: str, level: int, num_input_tokens: int) -> int:
        """Token count of `level` (1 = action, 2 = event) for `modality` ("text" or "video"), given the token count
        of the level below (the model passes `max_words` / `num_frames` at the action level, whatever the padding)."""
        if self.cluster_mode == "count":
            counts = self.text_cluster_counts if modality == "text" else self.video_cluster_counts
            return counts[level - 1]
        ratios = self.text_cluster_ratios if modality == "text" else self.video_cluster_ratios
        return max(math.ceil(round(num_input_tokens * ratios[level - 1], 6)), 1)

    def level_shape(self, level: int) -> tuple[int, int]:
        r"""
        `(words, frames)` of `level`'s token matrix for inputs padded to `max_words` words and `num_frames` frames (as
        [`HBIProcessor`] and the official loaders pad them): the shape whose cells the official objective's L_I
        averages over (see `objective`).

        Args:
            level (`int`): 0 (entity), 1 (action) or 2 (event).
        """
        words, frames = self.max_words, self.num_frames
        for merged in range(1, level + 1):
            words = self.num_merged_tokens("text", merged, words)
            frames = self.num_merged_tokens("video", merged, frames)
        return words, frames

    def merged_token_counts(self, modality: str, level: int, valid_tokens, num_input_tokens: int):
        r"""
        Tokens of `level` (1 = action, 2 = event) for each item: in `"count"` mode the paper's count scaled by the
        item's valid length (see `cluster_mode`), in `"ratio"` mode the official count of `num_input_tokens`.

        Args:
            modality (`str`): `"text"` or `"video"`.
            level (`int`): 1 (action) or 2 (event).
            valid_tokens (`torch.LongTensor` of shape `(batch,)`): valid tokens of each item at the level below.
            num_input_tokens (`int`): token count of the level below (see [`num_merged_tokens`]).

        Returns:
            `torch.LongTensor` of shape `(batch,)`, each in `[1, num_merged_tokens(...)]`.
        """
        width = self.num_merged_tokens(modality, level, num_input_tokens)
        if self.cluster_mode == "ratio":
            return valid_tokens.new_full(valid_tokens.shape, width)
        counts = self.text_cluster_counts if modality == "text" else self.video_cluster_counts
        if level == 1:
            reference = self.max_words if modality == "text" else self.num_frames
        else:
            reference = counts[level - 2]
        scaled = (valid_tokens.double() * counts[level - 1] / reference - 1e-9).ceil()
        return scaled.clamp(1, width).long()


__all__ = ["HBIConfig", "HBIBanzhafEstimatorConfig"]
