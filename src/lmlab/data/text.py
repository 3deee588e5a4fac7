"""Text files -> a memory-mapped stream of token ids, split into train / val, and batches from it.

The corpus is a text file or a folder searched recursively for ``*.txt`` (sorted paths). Files are
read as UTF-8 (invalid bytes become U+FFFD, line endings normalised to ``\\n``) and streamed in
chunks, so the corpus never has to fit in memory.

Documents (files) are separated by the tokenizer's end-of-text token when it has one (BPE), else by
the text ``"\\n\\n"`` (char). Chunks are cut just before a ``"\\n"`` (else a ``" "``) that follows a
non-space character: byte-level BPE (GPT-2 pre-tokenization) never merges across such a point, so
the token stream does not depend on the chunk size; for the char tokenizer any cut is exact.

``TokenData.build`` writes ``out_dir/tokens.bin`` (uint16, or uint32 for vocabularies of 65536+)
and ``out_dir/meta.json``; the first ``1 - val_fraction`` of the stream is ``train``, the rest
``val`` (as nanoGPT splits Shakespeare 90/10). A build with the same source files (path, size, mtime)
and the same tokenizer reuses the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmlab.errors import ConfigError, DataError

BUNDLED_SHAKESPEARE = Path(__file__).resolve().parent.parent / "assets" / "tinyshakespeare.txt"
DOC_SEPARATOR = "\n\n"
_FORMAT = 1
# Greedy ".*" backtracks from the end: the match ends at the last non-space char followed by '\n' / ' '.
_CUT_PATTERNS = (re.compile(r".*\S(?=\n)", re.S), re.compile(r".*\S(?= )", re.S))


def list_text_files(path: str | Path | None) -> list[Path]:
    """A file, or the ``*.txt`` files under a folder (recursive, sorted), without empty files.

    ``None`` means the bundled tiny Shakespeare.
    """
    path = BUNDLED_SHAKESPEARE if path is None else Path(path)
    if not path.exists():
        raise DataError(f"data path not found: {path}")
    if path.is_file():
        if path.stat().st_size == 0:
            raise DataError(f"data file {path} is empty")
        return [path]
    files = sorted(
        (p for p in path.rglob("*.txt") if p.is_file()), key=lambda p: p.relative_to(path).as_posix()
    )
    if not files:
        raise DataError(f"no .txt files found under {path}")
    files = [p for p in files if p.stat().st_size > 0]
    if not files:
        raise DataError(f"data folder {path} is empty: all its .txt files are empty")
    return files


def _stable_cut(buf: str) -> int:
    """Where to cut ``buf`` without changing byte-level BPE pre-tokenization (0: nowhere)."""
    for pattern in _CUT_PATTERNS:
        m = pattern.match(buf)
        if m:
            return m.end()
    return 0


def iter_file_chunks(file: str | Path, chunk_chars: int = 1 << 20) -> Iterator[str]:
    """Stream one file in chunks of about ``chunk_chars`` characters (at most twice that)."""
    buf = ""
    with open(file, encoding="utf-8", errors="replace") as f:
        while block := f.read(chunk_chars):
            buf += block
            if len(buf) >= chunk_chars:
                cut = _stable_cut(buf) or len(buf)
                yield buf[:cut]
                buf = buf[cut:]
    if buf:
        yield buf


def iter_text(path: str | Path | None, chunk_chars: int = 1 << 20) -> Iterator[str]:
    """Stream the corpus as text chunks, files joined by ``"\\n\\n"`` (e.g. to train a tokenizer)."""
    for k, file in enumerate(list_text_files(path)):
        if k:
            yield DOC_SEPARATOR
        yield from iter_file_chunks(file, chunk_chars)


def _tokenizer_info(tokenizer: Any) -> dict[str, Any]:
    info: dict[str, Any] = {"vocab_size": int(tokenizer.vocab_size), "eos_id": tokenizer.eos_id}
    if hasattr(tokenizer, "to_str"):
        info["sha256"] = hashlib.sha256(tokenizer.to_str().encode("utf-8")).hexdigest()
    return info


def _sources(files: Sequence[Path]) -> list[dict[str, Any]]:
    out = []
    for p in files:
        st = p.stat()
        out.append({"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def _check_val_fraction(val_fraction: float) -> None:
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1), encoding="utf-8")
    os.replace(tmp, path)


class TokenData:
    """A token stream on disk: ``tokens`` (all), ``train`` and ``val`` are read-only np.memmap views."""

    def __init__(self, out_dir: str | Path, val_fraction: float | None = None):
        """Open an existing cache (prefer ``TokenData.open``)."""
        self.out_dir = Path(out_dir)
        meta_path, bin_path = self.out_dir / "meta.json", self.out_dir / "tokens.bin"
        if not meta_path.is_file() or not bin_path.is_file():
            raise DataError(f"no token cache in {self.out_dir} (tokens.bin / meta.json missing)")
        try:
            self.meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
            dtype = np.dtype(self.meta["dtype"])
            n = int(self.meta["n_tokens"])
        except (ValueError, KeyError, TypeError) as e:
            raise DataError(f"corrupt token cache metadata {meta_path}: {e}") from None
        if bin_path.stat().st_size != n * dtype.itemsize:
            raise DataError(
                f"token cache {bin_path} is truncated: {bin_path.stat().st_size} bytes, "
                f"expected {n} tokens x {dtype.itemsize} bytes"
            )
        self.val_fraction = float(
            self.meta.get("val_fraction", 0.1) if val_fraction is None else val_fraction
        )
        _check_val_fraction(self.val_fraction)
        self.vocab_size = int(self.meta["tokenizer"]["vocab_size"])
        self.tokens = np.memmap(bin_path, dtype=dtype, mode="r", shape=(n,))
        n_train = int(n * (1.0 - self.val_fraction))
        self.train = self.tokens[:n_train]
        self.val = self.tokens[n_train:]

    @property
    def n_tokens(self) -> int:
        return len(self.tokens)

    @classmethod
    def open(cls, out_dir: str | Path, val_fraction: float | None = None) -> TokenData:
        """Re-open a cache written by ``build`` (``val_fraction`` defaults to the one it was built with)."""
        return cls(out_dir, val_fraction)

    @classmethod
    def build(
        cls,
        path: str | Path | None,
        tokenizer: Any,
        out_dir: str | Path,
        val_fraction: float = 0.1,
        chunk_chars: int = 1 << 20,
    ) -> TokenData:
        """Tokenize the corpus at ``path`` into ``out_dir`` (or reuse a matching cache there).

        Not safe to run from several processes at once on one ``out_dir``: build on one rank first.
        """
        _check_val_fraction(val_fraction)
        files = list_text_files(path)
        out_dir = Path(out_dir)
        meta_path, bin_path = out_dir / "meta.json", out_dir / "tokens.bin"
        sources, tok_info = _sources(files), _tokenizer_info(tokenizer)
        if meta_path.is_file():
            try:
                old = json.loads(meta_path.read_text(encoding="utf-8"))
            except ValueError:
                old = {}
            if (
                old.get("format") == _FORMAT
                and old.get("sources") == sources
                and old.get("tokenizer") == tok_info
            ):
                try:
                    data = cls.open(out_dir, val_fraction)
                except DataError:
                    pass  # truncated or corrupt: rebuild
                else:
                    if old.get("val_fraction") != val_fraction:
                        _write_json(meta_path, {**old, "val_fraction": val_fraction})
                        data.meta["val_fraction"] = val_fraction
                    return data

        out_dir.mkdir(parents=True, exist_ok=True)
        meta_path.unlink(missing_ok=True)  # no valid meta while tokens.bin is being rewritten
        dtype = np.dtype(np.uint16 if tokenizer.vocab_size < 65536 else np.uint32)
        if tokenizer.eos_id is not None:
            separator = np.array([tokenizer.eos_id], dtype=dtype)
        else:
            separator = np.asarray(tokenizer.encode(DOC_SEPARATOR), dtype=dtype)
        tmp = bin_path.with_name(f"tokens.bin.tmp{os.getpid()}")
        n = 0
        with open(tmp, "wb") as f:
            for k, file in enumerate(files):
                if k:
                    separator.tofile(f)
                    n += separator.size
                for chunk in iter_file_chunks(file, chunk_chars):
                    ids = np.asarray(tokenizer.encode(chunk), dtype=dtype)
                    ids.tofile(f)
                    n += ids.size
        if n == 0:
            tmp.unlink()
            raise DataError(f"{path} produced no tokens")
        os.replace(tmp, bin_path)
        meta = {
            "format": _FORMAT,
            "dtype": dtype.name,
            "n_tokens": n,
            "val_fraction": val_fraction,
            "document_separator": "eos" if tokenizer.eos_id is not None else DOC_SEPARATOR,
            "sources": sources,
            "tokenizer": tok_info,
        }
        _write_json(meta_path, meta)
        return cls.open(out_dir)

    def check_block_size(self, block_size: int) -> None:
        """Both splits must hold at least one window of ``block_size`` + 1 tokens."""
        need = block_size + 1
        for name, arr in (("train", self.train), ("validation", self.val)):
            if len(arr) < need:
                raise DataError(
                    f"the {name} split has {len(arr)} tokens (of {self.n_tokens}, val_fraction="
                    f"{self.val_fraction}) but block_size={block_size} needs at least {need}; use more data, "
                    "another data.val_fraction or a smaller block_size"
                )

    def __repr__(self) -> str:
        dtype = self.tokens.dtype
        return f"TokenData({self.out_dir}, train={len(self.train)}, val={len(self.val)}, dtype={dtype})"


# --------------------------------------------------------------------------------------------------
# batches


def gather_blocks(arr: np.ndarray, starts: Any, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows ``arr[s : s + block_size + 1]`` for each start -> (x, y) LongTensors (B, block_size)."""
    starts = np.asarray(starts, dtype=np.int64)
    rows = torch.from_numpy(arr[starts[:, None] + np.arange(block_size + 1)].astype(np.int64))
    return rows[:, :-1].contiguous(), rows[:, 1:].contiguous()


def random_blocks(
    arr: np.ndarray, batch_size: int, block_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random contiguous windows: x (B, T) and y = x shifted by one token."""
    if len(arr) < block_size + 1:
        raise DataError(f"{len(arr)} tokens are too few for block_size={block_size} (need {block_size + 1})")
    starts = torch.randint(len(arr) - block_size, (batch_size,), generator=generator)
    return gather_blocks(arr, starts.numpy(), block_size)


def n_windows(n_tokens: int, block_size: int) -> int:
    """How many non-overlapping windows cover the ``n_tokens - 1`` next-token predictions."""
    return max(0, -(-(n_tokens - 1) // block_size))


def iter_eval_batches(
    arr: np.ndarray, block_size: int, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Deterministic non-overlapping windows predicting every token of ``arr`` after the first once.

    Window i has x = ``arr[i*T : i*T+T]`` and y = ``arr[i*T+1 : i*T+T+1]``. Full windows come in
    batches of ``batch_size``; the final partial window (if any) comes last as its own (1, L) batch.
    """
    n_pred = len(arr) - 1
    n_full = max(0, n_pred // block_size)
    for b in range(0, n_full, batch_size):
        yield gather_blocks(arr, np.arange(b, min(b + batch_size, n_full)) * block_size, block_size)
    rest = n_pred - n_full * block_size
    if rest > 0:
        yield gather_blocks(arr, [n_full * block_size], rest)
