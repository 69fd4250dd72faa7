"""A searchable gallery: a faiss index over feature vectors, the image paths beside it, and where they came from.

An index is a folder holding `index.faiss`, `paths.txt` (one gallery path per line, row i = vector i) and
`meta.json` (feature dimension, feature kind, index parameters and the fingerprint of the model that made the
features). The fingerprint lets `search` refuse query features from another model instead of returning
confidently wrong neighbours.

Two kinds:
- `flat`: exact squared-Euclidean search (`IndexFlatL2`); memory 4·D bytes per image. The default: exact,
  no training, and fast enough up to about a million images.
- `ivfpq`: inverted lists + product quantisation for larger galleries; an optional PCA first (for wide features
  such as the 12288-d stripe vector) and a re-ranking stage on 8-bit scalar-quantised vectors ("refine") so that
  the top-K are ordered by nearly exact distances. Distances are then approximate and, with PCA, measured in the
  reduced space.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spanet.errors import SpanetError
from spanet.outputs import atomic_path, write_text

__all__ = [
    "INDEX_KINDS",
    "REFINE_KINDS",
    "IndexParams",
    "Match",
    "GalleryIndex",
    "choose_params",
    "build_index",
    "check_compatible",
]

INDEX_KINDS = ("flat", "ivfpq")
REFINE_KINDS = ("none", "sq8", "flat")
INDEX_FORMAT = "spanet-index"
INDEX_VERSION = 1
_INDEX_FILE = "index.faiss"
_PATHS_FILE = "paths.txt"
_META_FILE = "meta.json"
# faiss k-means wants at least 39 training points per centroid; fewer gives poor centroids (and a warning).
_MIN_POINTS_PER_CENTROID = 39


@dataclass(frozen=True)
class IndexParams:
    """Everything needed to rebuild the same index; `None` fields do not apply to the kind."""

    kind: str = "flat"
    nlist: int | None = None  # inverted lists (k-means centroids)
    m: int | None = None  # PQ sub-quantisers; must divide the (reduced) dimension
    nbits: int | None = None  # bits per sub-quantiser code
    nprobe: int | None = None  # lists visited per query: the speed/recall knob
    pca_dim: int | None = None  # reduce the dimension with PCA before the IVF, or None
    refine: str | None = None  # re-rank candidates with "sq8" or "flat" vectors, or "none"
    k_factor: int | None = None  # candidates re-ranked = k_factor · top-K
    train_size: int | None = None  # vectors sampled to train PCA / k-means / PQ

    def factory_string(self, dim: int) -> str:
        """The faiss `index_factory` description of this index (with PCA, re-ranking happens after the PCA)."""
        if self.kind == "flat":
            return "Flat"
        parts = []
        if self.pca_dim:
            parts.append(f"PCA{self.pca_dim}")
        parts.append(f"IVF{self.nlist}")
        parts.append(f"PQ{self.m}x{self.nbits}")
        if self.refine == "sq8":
            parts.append("Refine(SQ8)")
        elif self.refine == "flat":
            parts.append("RFlat")
        return ",".join(parts)


@dataclass(frozen=True)
class Match:
    """One gallery hit: its path, its distance to the query (squared Euclidean) and its row in the index."""

    path: str
    distance: float
    row: int


def choose_params(
    num_vectors: int,
    dim: int,
    *,
    kind: str = "flat",
    nlist: int | None = None,
    m: int | None = None,
    nbits: int | None = None,
    nprobe: int | None = None,
    pca_dim: int | None = None,
    refine: str | None = None,
    k_factor: int | None = None,
    train_size: int | None = None,
) -> IndexParams:
    """Fill the parameters left as `None` with values that suit a gallery of `num_vectors` × `dim`.

    ivfpq rules of thumb: nlist ≈ 4·√N (16..65536, and at most N/39 so each centroid gets enough training
    points); PCA to 256 when D > 1024 (PQ sub-vectors of hundreds of dimensions lose most of the distance
    information); m = the largest divisor of the reduced dimension ≤ min(64, D/4), so sub-vectors have ≥ 4 dims;
    nbits = 8 unless too few training vectors; nprobe ≈ nlist/64 (≥ 8); refine with 8-bit vectors, k_factor 8.
    """
    if kind not in INDEX_KINDS:
        raise SpanetError(f"index kind {kind!r} is unknown; use one of: {', '.join(INDEX_KINDS)}")
    if num_vectors < 1 or dim < 1:
        raise SpanetError(f"cannot index {num_vectors} vectors of dimension {dim}; extract some features first")
    if kind == "flat":
        return IndexParams(kind="flat")
    if refine is not None and refine not in REFINE_KINDS:
        raise SpanetError(f"refine {refine!r} is unknown; use one of: {', '.join(REFINE_KINDS)}")
    if pca_dim is None:
        pca_dim = min(256, num_vectors) if dim > 1024 else 0
    if pca_dim < 0 or pca_dim > dim:
        raise SpanetError(f"pca_dim {pca_dim} must be between 0 (no PCA) and the feature dimension {dim}")
    reduced = pca_dim or dim
    if nlist is None:
        nlist = int(round(4 * math.sqrt(num_vectors)))
        nlist = max(1, min(nlist, 65536, num_vectors // _MIN_POINTS_PER_CENTROID))
    if nlist < 1 or nlist > num_vectors:
        raise SpanetError(f"nlist {nlist} must be between 1 and the number of gallery vectors ({num_vectors})")
    if m is None:
        m = max(d for d in range(1, min(64, max(1, reduced // 4)) + 1) if reduced % d == 0)
    if m < 1 or reduced % m != 0:
        raise SpanetError(f"m (PQ sub-quantisers) {m} must divide the {'PCA-reduced ' if pca_dim else ''}feature dimension {reduced}")
    if train_size is None:
        train_size = min(num_vectors, max(_MIN_POINTS_PER_CENTROID * nlist, 256 * _MIN_POINTS_PER_CENTROID, 2 * reduced))
    train_size = min(train_size, num_vectors)
    if nbits is None:
        # 2**nbits PQ centroids per sub-space also need ~39 training points each.
        nbits = max(1, min(8, int(math.log2(max(2, train_size // _MIN_POINTS_PER_CENTROID)))))
    if not 1 <= nbits <= 16:
        raise SpanetError(f"nbits {nbits} must be between 1 and 16 (8 is usual)")
    if nprobe is None:
        nprobe = max(8, nlist // 64)
    nprobe = max(1, min(nprobe, nlist))
    return IndexParams(
        kind="ivfpq",
        nlist=nlist,
        m=m,
        nbits=nbits,
        nprobe=nprobe,
        pca_dim=pca_dim or None,
        refine=refine or "sq8",
        k_factor=k_factor or 8,
        train_size=train_size,
    )


def build_index(features: np.ndarray, *, params: IndexParams, seed: int = 0) -> Any:
    """Train (if needed) and fill a faiss index with `features` (N, D); rows keep the order of `features`."""
    import faiss

    features = _as_float32_matrix(features, what="gallery features")
    num, dim = features.shape
    if params.pca_dim:
        # PCA outermost, so the re-ranking vectors live in the reduced space (256 B, not 12 KB, per 12288-d image)
        inner = faiss.index_factory(params.pca_dim, params.factory_string(dim).split(",", 1)[1], faiss.METRIC_L2)
        wrapped = faiss.IndexPreTransform(faiss.PCAMatrix(dim, params.pca_dim), inner)
        # a serialisation round trip gives one index that owns its parts (no Python objects to keep alive)
        index = faiss.deserialize_index(faiss.serialize_index(wrapped))
    else:
        index = faiss.index_factory(dim, params.factory_string(dim), faiss.METRIC_L2)
    if not index.is_trained:
        sample = features
        if params.train_size is not None and params.train_size < num:
            rows = np.random.default_rng(seed).choice(num, size=params.train_size, replace=False)
            sample = features[np.sort(rows)]
        _seed_clustering(index, seed)
        index.train(sample)
        _trim_pca(index)
    index.add(features)
    _set_search_params(index, params)
    return index


class GalleryIndex:
    """A faiss index, the gallery paths of its rows, and metadata (`meta`) saying how it was made."""

    def __init__(self, index: Any, paths: Sequence[str], meta: dict[str, Any]) -> None:
        if index.ntotal != len(paths):
            raise SpanetError(f"index holds {index.ntotal} vectors but {len(paths)} paths were given")
        self.index = index
        self.paths = list(paths)
        self.meta = dict(meta)

    @classmethod
    def build(
        cls,
        features: np.ndarray,
        paths: Sequence[str],
        *,
        params: IndexParams,
        info: dict[str, Any] | None = None,
        seed: int = 0,
    ) -> GalleryIndex:
        """Index `features` (row i belongs to `paths[i]`); `info` describes the model (see FeatureExtractor.info)."""
        features = _as_float32_matrix(features, what="gallery features")
        if len(paths) != features.shape[0]:
            raise SpanetError(f"{features.shape[0]} feature rows but {len(paths)} paths; they must match one to one")
        start = time.perf_counter()
        index = build_index(features, params=params, seed=seed)
        meta = {
            "format": INDEX_FORMAT,
            "version": INDEX_VERSION,
            "num_vectors": int(features.shape[0]),
            "feature_dim": int(features.shape[1]),
            "params": dataclasses.asdict(params),
            "factory": params.factory_string(features.shape[1]),
            "build_seconds": round(time.perf_counter() - start, 3),
            "model": dict(info or {}),
        }
        return cls(index, paths, meta)

    @property
    def feature_dim(self) -> int:
        return int(self.meta["feature_dim"])

    def __len__(self) -> int:
        return len(self.paths)

    def search_arrays(self, queries: np.ndarray, *, top_k: int) -> tuple[np.ndarray, np.ndarray]:
        """Distances and row indices (Q, K') of the nearest gallery vectors, K' = min(top_k, gallery size)."""
        queries = _as_float32_matrix(queries, what="query features")
        if queries.shape[1] != self.feature_dim:
            raise SpanetError(
                f"query features have dimension {queries.shape[1]} but the index was built from "
                f"{self.feature_dim}-d features; extract queries with the model that built the index"
            )
        if top_k < 1:
            raise SpanetError(f"top_k must be at least 1, got {top_k}")
        k = min(top_k, len(self))
        distances, rows = self.index.search(queries, k)
        return distances, rows

    def search(self, queries: np.ndarray, *, top_k: int) -> list[list[Match]]:
        """The top-K `Match`es of each query row, nearest first."""
        distances, rows = self.search_arrays(queries, top_k=top_k)
        return [
            [Match(path=self.paths[r], distance=float(d), row=int(r)) for d, r in zip(dist_row, row_row) if r >= 0]
            for dist_row, row_row in zip(distances, rows)
        ]

    def set_nprobe(self, nprobe: int) -> None:
        """Change how many inverted lists a query visits (ivfpq only)."""
        params = dataclasses.replace(IndexParams(**self.meta["params"]), nprobe=nprobe)
        _set_search_params(self.index, params)
        self.meta["params"] = dataclasses.asdict(params)

    def save(self, directory: str | Path) -> Path:
        """Write `index.faiss`, `paths.txt` and `meta.json` into `directory` (created if missing)."""
        import faiss

        directory = Path(directory)
        if directory.exists() and not directory.is_dir():
            raise SpanetError(f"{directory} is a file; an index is a folder: save it to a new or existing folder")
        directory.mkdir(parents=True, exist_ok=True)
        bad = [p for p in self.paths if "\n" in p or "\r" in p]
        if bad:
            raise SpanetError(f"gallery path {bad[0]!r} contains a line break; rename the file")
        with atomic_path(directory / _INDEX_FILE) as tmp:
            faiss.write_index(self.index, str(tmp))
        write_text(directory / _PATHS_FILE, "".join(p + "\n" for p in self.paths))
        meta = {**self.meta, "checksums": {name: _file_sha256(directory / name) for name in (_INDEX_FILE, _PATHS_FILE)}}
        write_text(directory / _META_FILE, json.dumps(meta, indent=2) + "\n")  # last: it vouches for the others
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> GalleryIndex:
        """Read an index folder written by `save`; a missing or foreign folder raises `SpanetError`."""
        import faiss

        directory = Path(directory)
        missing = [name for name in (_INDEX_FILE, _PATHS_FILE, _META_FILE) if not (directory / name).is_file()]
        if missing:
            raise SpanetError(
                f"index {directory} lacks {', '.join(missing)}; pass a folder written by `spanet index build`"
            )
        try:
            meta = json.loads((directory / _META_FILE).read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise SpanetError(f"{directory / _META_FILE} is not valid JSON ({exc}); rebuild the index") from None
        if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
            raise SpanetError(f"{directory / _META_FILE} is not a spanet index description; rebuild the index")
        if meta.get("version", 0) > INDEX_VERSION:
            raise SpanetError(f"index {directory} has version {meta.get('version')}; upgrade spanet to read it")
        for name, expected in (meta.pop("checksums", None) or {}).items():  # indexes from before checksums have none
            if name in (_INDEX_FILE, _PATHS_FILE) and _file_sha256(directory / name) != expected:
                raise SpanetError(
                    f"{directory / name} is damaged or was changed after the index was built (checksum mismatch); "
                    "rebuild the index with `spanet index build`"
                )
        try:
            index = faiss.read_index(str(directory / _INDEX_FILE))
        except RuntimeError as exc:
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else "unreadable"
            raise SpanetError(f"{directory / _INDEX_FILE} could not be read ({first_line}); rebuild the index") from None
        paths = (directory / _PATHS_FILE).read_text(encoding="utf-8").splitlines()
        if index.ntotal != len(paths):
            raise SpanetError(
                f"index {directory}: {index.ntotal} vectors but {len(paths)} lines in {_PATHS_FILE}; rebuild the index"
            )
        gallery = cls(index, paths, meta)
        _set_search_params(index, IndexParams(**meta["params"]))
        return gallery


def check_compatible(index_meta: dict[str, Any], model_info: dict[str, Any], *, index_path: str | Path) -> None:
    """Raise `SpanetError` unless query features from `model_info`'s model are comparable with the index.

    Dimension, feature kind and the model's fingerprints (architecture + weights) must agree; a fingerprint
    missing on either side (features from elsewhere) is not checked.
    """
    built = index_meta.get("model") or {}
    if int(model_info.get("feature_dim", index_meta["feature_dim"])) != int(index_meta["feature_dim"]):
        raise SpanetError(
            f"index {index_path} holds {index_meta['feature_dim']}-d features but the checkpoint gives "
            f"{model_info['feature_dim']}-d ones; use the checkpoint the gallery was extracted with "
            f"({built.get('checkpoint', 'unknown')})"
        )
    for key, label in (("kind", "feature kind"), ("args_fingerprint", "model architecture"), ("weights_fingerprint", "model weights")):
        if key in built and key in model_info and built[key] != model_info[key]:
            raise SpanetError(
                f"index {index_path} was built with a different {label} ({built[key]!r}, from checkpoint "
                f"{built.get('checkpoint', 'unknown')}) than the query model ({model_info[key]!r}, from "
                f"{model_info.get('checkpoint', 'unknown')}); search with the same checkpoint or rebuild the index"
            )


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def _as_float32_matrix(array: np.ndarray, *, what: str) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != 2 or array.shape[0] == 0:
        raise SpanetError(f"{what} must be a non-empty (N, D) matrix, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise SpanetError(f"{what} contain NaN or infinite values; re-extract them")
    return np.ascontiguousarray(array, dtype=np.float32)


def _seed_clustering(index: Any, seed: int) -> None:
    """Make k-means repeatable: faiss seeds its clustering with a fixed default, set it from `seed` instead."""
    import faiss

    ivf = _find_ivf(index)
    if ivf is not None:
        ivf.cp.seed = seed
        pq = getattr(faiss.downcast_index(ivf), "pq", None)
        if pq is not None:
            pq.cp.seed = seed


def _trim_pca(index: Any) -> None:
    """Keep only the used rows of a trained PCA's eigenvector matrix.

    faiss keeps all min(N, D) eigenvectors (12288 × 5000 floats = 245 MB for a 12288-d gallery) although the
    projection only uses the first `d_out`, already copied into its matrix `A`; search results are unchanged.
    """
    import faiss

    if not isinstance(faiss.downcast_index(index), faiss.IndexPreTransform):
        return
    chain = faiss.downcast_index(index).chain
    for i in range(chain.size()):
        transform = faiss.downcast_VectorTransform(chain.at(i))
        if isinstance(transform, faiss.PCAMatrix) and transform.PCAMat.size() > transform.d_in * transform.d_out:
            transform.PCAMat.resize(transform.d_in * transform.d_out)


def _find_ivf(index: Any) -> Any:
    import faiss

    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


def _set_search_params(index: Any, params: IndexParams) -> None:
    import faiss

    if params.kind != "ivfpq":
        return
    space = faiss.ParameterSpace()
    space.set_index_parameter(index, "nprobe", int(params.nprobe))
    if params.refine and params.refine != "none":
        space.set_index_parameter(index, "k_factor_rf", int(params.k_factor))
