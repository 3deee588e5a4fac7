"""``lmlab.load(path)``: a trained run (or one of its checkpoints) ready to generate and evaluate."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmlab.checkpoint import CHECKPOINTS_DIR, MODEL_FILE, STATE_FILE, latest_checkpoint, load_model_weights
from lmlab.config import RunConfig
from lmlab.errors import CheckpointError, ConfigError, DataError
from lmlab.runs import CONFIG_FILE, TOKENIZER_FILE, build_run_model, read_run_config
from lmlab.tokenizers import load_tokenizer

_STEP_DIR = re.compile(r"^step_\d+$")


class Pipeline:
    """A model, its tokenizer and its config.

    ``model`` maps token ids (B, T) to logits (B, T, V); ``tokenizer`` has ``encode``/``decode``.
    """

    averaged: tuple[Path, ...] = ()
    """The checkpoints whose mean weights were loaded (``lmlab.load(..., average=K)``), oldest first."""

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        config: RunConfig,
        path: Path | None = None,
        checkpoint: Path | None = None,
    ) -> None:
        self.model, self.tokenizer, self.config, self.path = model, tokenizer, config, path
        self.checkpoint = checkpoint
        """The checkpoint directory the weights were loaded from."""

    def __repr__(self) -> str:
        return f"Pipeline({self.config.family}, checkpoint={self.checkpoint}, device={self.device})"

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(
        self,
        prompt: str,
        max_new_tokens: int = 200,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        stop: str | list[str] | None = None,
        stream: Callable[[str], None] | None = None,
    ) -> str:
        """The continuation of ``prompt`` (without the prompt). temperature=0 is greedy decoding.

        ``top_k``/``top_p`` filter the sampled distribution; ``seed`` makes sampling reproducible;
        generation stops before the first ``stop`` string; ``stream(piece)`` receives the text as it
        is generated. A prompt longer than the model's context is cut to its last tokens (a warning).
        """
        from lmlab.errors import GenerationError
        from lmlab.generate import generate_text

        if self.config.family == "bert":
            raise GenerationError("a BERT model does not generate text (it is bidirectional); use embed")
        if not isinstance(prompt, str):
            raise GenerationError(f"prompt must be a string, got {type(prompt).__name__}")
        if isinstance(stop, str):
            stop = [stop]
        return generate_text(
            self.model,
            self.tokenizer,
            prompt,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            stop=stop,
            stream=stream,
        )

    def embed(self, texts: str | list[str], batch_size: int = 32, normalize: bool = True) -> torch.Tensor:
        """Sentence embeddings from a BERT encoder: (N, d_model) float32 on the CPU (N = 1 for one string).

        Each text is encoded as ``[CLS] text [SEP]`` (cut to the context length); the last hidden states
        are averaged over its real tokens (sentence-transformers' mean pooling) and L2-normalised unless
        ``normalize=False``, so all-MiniLM-L6-v2 loaded with ``lmlab.load`` gives its own embeddings.
        """
        encoder = getattr(self.model, "bert", self.model)
        if not hasattr(encoder, "embed") or not hasattr(self.tokenizer, "encode_padded"):
            raise ConfigError(
                f"embed needs a BERT model and its WordPiece tokenizer, not a '{self.config.family}' model"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = [torch.zeros(0, encoder.config.d_model)]
        max_length = encoder.config.block_size
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                batch = self.tokenizer.encode_padded(texts[i : i + batch_size], max_length=max_length)
                batch = {k: v.to(self.device) for k, v in batch.items()}
                out.append(encoder.embed(**batch, normalize=normalize).float().cpu())
        return torch.cat(out)

    def fill_mask(self, text: str, top_k: int = 5) -> list[list[tuple[str, float]]]:
        """For each ``[MASK]`` of ``text`` (in order), the ``top_k`` most likely tokens of a BERT masked
        LM with their probabilities (softmax over the whole vocabulary), most likely first."""
        from lmlab.errors import GenerationError
        from lmlab.models.bert import Bert, BertForMaskedLM, BertForPreTraining

        if not isinstance(self.model, (BertForMaskedLM, BertForPreTraining)):
            if isinstance(self.model, Bert) or hasattr(self.model, "bert"):
                raise ConfigError(
                    f"this model has no masked-LM head (it is a {type(self.model).__name__}, e.g. a "
                    "sentence-embedding checkpoint): fill-mask needs a BertForMaskedLM; use embed instead"
                )
            family = self.config.family
            raise ConfigError(f"fill-mask needs a BERT masked language model, not a '{family}' model")
        mask_id = getattr(self.tokenizer, "mask_id", None)
        if mask_id is None:
            raise ConfigError("the tokenizer has no [MASK] token")
        if not isinstance(text, str):
            raise GenerationError(f"text must be a string, got {type(text).__name__}")
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise GenerationError(f"top_k must be an integer >= 1, got {top_k!r}")
        ids = self.tokenizer.encode(text)
        where = [i for i, t in enumerate(ids) if t == mask_id]
        if not where:
            raise GenerationError("the text has no [MASK] token: write [MASK] where a word is missing")
        block = self.model.config.block_size
        if len(ids) > block:
            raise GenerationError(f"the text has {len(ids)} tokens, more than the model's context ({block})")
        with torch.no_grad():
            logits = self.model(torch.tensor([ids], device=self.device))
            if isinstance(logits, tuple):  # BertForPreTraining: (masked-LM logits, next-sentence logits)
                logits = logits[0]
            probs = logits[0, where].float().softmax(-1)[:, : self.tokenizer.vocab_size].cpu()
        top = probs.topk(min(top_k, probs.size(-1)), dim=-1)
        return [
            [(self.tokenizer.token_to_str(int(i)), float(p)) for p, i in zip(ps, idx)]
            for ps, idx in zip(top.values, top.indices)
        ]

    def evaluate(self, data: str | Path | None = None, batch_size: int = 64) -> dict[str, float]:
        """Mean next-token ``loss``, ``perplexity`` and the number of ``tokens`` predicted, over
        non-overlapping windows of the validation split of the run's data, or of the whole of
        ``data`` (a text file or a folder of .txt files) if given.

        A BERT masked LM (family bert) gives its masked-LM metrics instead (``mlm_loss``, ``mlm_acc``,
        with the next-sentence head ``nsp_loss`` / ``nsp_acc``; ``lmlab.tasks.mlm.evaluate_pipeline``)
        on the held-out documents with fixed masks, or on every document of ``data``."""
        import numpy as np

        from lmlab.data import TokenData
        from lmlab.data.text import DOC_SEPARATOR, iter_file_chunks, list_text_files
        from lmlab.tasks import evaluate_lm

        if self.config.family == "bert":
            from lmlab.tasks.mlm import evaluate_pipeline

            return evaluate_pipeline(self, data, batch_size)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        block = self.config.data.block_size or self.config.model.block_size
        if data is None:
            if self.path is not None and self.checkpoint is None and (self.path / "config.json").is_file():
                raise DataError(
                    f"{self.path} is a Hugging Face model directory, which holds no run data: pass the "
                    "text to evaluate on with data=FILE (--data FILE)"
                )
            if self.path is None or not (self.path / "data").exists():
                raise DataError(
                    f"the run's token cache ({self.path}/data) is missing: pass data=FILE (--data FILE)"
                )
            arr = TokenData.open(self.path / "data", val_fraction=self.config.data.val_fraction).val
            where = "the validation split"
        else:
            # Tokenized as the run's data is: files joined by EOS (or the text separator).
            eos = getattr(self.tokenizer, "eos_id", None)
            separator = [eos] if eos is not None else self.tokenizer.encode(DOC_SEPARATOR)
            ids: list[int] = []
            for k, file in enumerate(list_text_files(data)):
                if k:
                    ids.extend(separator)
                for chunk in iter_file_chunks(file):
                    ids.extend(self.tokenizer.encode(chunk))
            arr = np.asarray(ids, dtype=np.int64)
            where = str(data)
        if len(arr) < 2:
            raise DataError(f"{where} has {len(arr)} token(s): at least 2 are needed to evaluate")
        return evaluate_lm(self.model, arr, block, batch_size=batch_size, device=self.device)


def _resolve_device(device: str | torch.device) -> torch.device:
    if isinstance(device, str) and device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"device '{device}' is not a device (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device '{device}' asked for but CUDA is not available (use cpu)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device '{device}': there are only {torch.cuda.device_count()} CUDA devices")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"device '{device}' asked for but MPS is not available (use cpu)")
    return dev


def find_run_dir(path: Path) -> tuple[Path, Path | None]:
    """(run directory, checkpoint directory or None for 'the newest') for a run or checkpoint path.

    ``path`` may be a run directory, its ``checkpoints`` folder, or one ``checkpoints/step_N``.
    """
    if (path / CONFIG_FILE).exists():
        return path, None
    if path.name == CHECKPOINTS_DIR and (path.parent / CONFIG_FILE).exists():
        return path.parent, None
    if path.parent.name == CHECKPOINTS_DIR and (path.parent.parent / CONFIG_FILE).exists():
        if not _STEP_DIR.match(path.name):
            raise CheckpointError(
                f"{path} is not a complete checkpoint (a complete one is named step_N; a .tmp one is "
                "a save that was interrupted). Load the run directory to use its newest complete checkpoint"
            )
        return path.parent.parent, path
    if (path / MODEL_FILE).exists():
        raise CheckpointError(
            f"{path} looks like a checkpoint, but no {CONFIG_FILE} was found in its run directory "
            f"{path.parent.parent}"
        )
    raise CheckpointError(f"{path} is not an lmlab run directory or checkpoint (no {CONFIG_FILE} found)")


def _quantize(model: nn.Module, quantize: str | None, device: torch.device) -> nn.Module:
    """``model`` as is (None) or with int8 linear layers ('int8', CPU only; see ``lmlab.quantize``)."""
    if quantize is None:
        return model
    if quantize != "int8":
        raise ConfigError(f"quantize='{quantize}' is not supported; valid: int8")
    if device.type != "cpu":
        raise ConfigError(f"quantize='int8' runs on the CPU; got device '{device}' (use device='cpu')")
    from lmlab.quantize import quantize_int8

    return quantize_int8(model, inplace=True)


def load_hf(path: str | Path, device: str | torch.device = "cpu", quantize: str | None = None) -> Pipeline:
    """Load a Hugging Face model directory (config.json with a supported model_type, e.g. gpt2)."""
    from lmlab.interop import hf_run_config, import_hf

    path = Path(path)
    dev = _resolve_device(device)
    model, tokenizer = import_hf(path)
    if tokenizer is None:
        raise CheckpointError(
            f"{path} holds no tokenizer (tokenizer.json, vocab.json + merges.txt, or BERT's vocab.txt); "
            "use lmlab.interop.import_hf for the model alone"
        )
    model = _quantize(model.to(dev).eval(), quantize, dev)
    return Pipeline(model, tokenizer, hf_run_config(model, tokenizer, path), path)


def load(
    path: str | Path,
    device: str | torch.device = "cpu",
    quantize: str | None = None,
    average: int | None = None,
) -> Pipeline:
    """Load a run directory (its newest complete checkpoint) or one checkpoint directory.

    A translation run (``task: translation``) gives a ``lmlab.translate.TranslationPipeline``, with
    ``translate(texts, beam=4, length_penalty=0.6)`` and ``evaluate()`` giving BLEU / chrF. A
    fine-tuning run gives a ``lmlab.finetune.ClassificationPipeline`` (``classify(text, pair=None)``)
    or ``TaggingPipeline`` (``tag(text)``), both with ``evaluate(split)``.

    ``average=K`` loads the mean of the weights of the last K checkpoints (ending with the one
    loaded; ``lmlab.checkpoint.average_checkpoints``), as the paper does with K = 5.

    A Hugging Face model directory (``config.json`` with a ``model_type``, e.g. a GPT-2 saved with
    ``save_pretrained``) is imported instead (see ``lmlab.interop``). A path that does not exist but
    looks like a hub name (``gpt2``, ``org/name``) is downloaded with huggingface_hub when it is
    installed and the hub can be reached (``lmlab.interop.hub``); otherwise the error says what to pass.

    A run directory skips corrupt or truncated checkpoints with a warning and uses the newest
    complete one; a checkpoint directory given explicitly must itself be complete (CheckpointError
    naming the bad file otherwise).

    ``quantize='int8'`` replaces the model's linear layers by int8 ones (``lmlab.quantize``; CPU only):
    faster generation, a quarter of the memory for the linear weights, slightly different logits.
    """
    from lmlab.checkpoint import validate_checkpoint

    name, path = str(path), Path(path)
    if not path.exists():
        from lmlab.interop.hub import hub_snapshot, looks_like_hub_name

        if looks_like_hub_name(name):  # 'gpt2', 'org/name': a Hugging Face hub model (lmlab[hf])
            return load_hf(hub_snapshot(name), device, quantize)
        raise CheckpointError(f"no such run directory or checkpoint: {path}")
    if not path.is_dir():
        raise CheckpointError(f"{path} is a file; pass a run directory or a checkpoint directory")
    from lmlab.interop import is_hf_dir

    if not (path / CONFIG_FILE).exists() and is_hf_dir(path):
        return load_hf(path, device, quantize)
    dev = _resolve_device(device)
    run_dir, ckpt = find_run_dir(path)
    cfg = read_run_config(run_dir)
    if ckpt is None:
        ckpt = latest_checkpoint(run_dir)
        if ckpt is None:
            raise CheckpointError(
                f"{run_dir} holds no checkpoint yet (train it first: lmlab train ... --out {run_dir})"
            )
    elif (ckpt / STATE_FILE).exists():
        validate_checkpoint(ckpt)  # both files, as lmlab.load(run_dir) would (weights-only dirs are fine)
    if cfg.task == "translation":
        from lmlab.translate import TranslationTokenizers

        tokenizers = TranslationTokenizers.load(run_dir, cfg.tokenizer.joint)
    else:
        tokenizer = load_tokenizer(run_dir / TOKENIZER_FILE)
    model = build_run_model(cfg)
    averaged: tuple[Path, ...] = ()
    if average is not None:
        from lmlab.checkpoint import average_weights, checkpoints_to_average, load_model_state

        averaged = tuple(checkpoints_to_average(run_dir, average, upto=ckpt))
        load_model_state(model, average_weights(list(averaged)), ckpt)
    else:
        load_model_weights(ckpt, model)
    model = _quantize(model.to(dev).eval(), quantize, dev)
    if cfg.task == "translation":
        from lmlab.translate import TranslationPipeline

        pipe: Pipeline = TranslationPipeline(model, tokenizers, cfg, run_dir, ckpt)
    elif cfg.task in ("classification", "tagging"):
        from lmlab.finetune import finetune_pipeline

        pipe = finetune_pipeline(model, tokenizer, cfg, run_dir, ckpt)  # .classify / .tag, .evaluate
    else:
        pipe = Pipeline(model, tokenizer, cfg, run_dir, ckpt)
    pipe.averaged = averaged
    return pipe
