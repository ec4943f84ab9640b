"""Learned local features matched by LightGlue: ALIKED + LightGlue and DISK + LightGlue (kornia).

Weights come only from disk, never from the network. Each method needs two files, under the
exact names kornia's own ``from_pretrained`` / ``LightGlue(features)`` cache them as, in
``<torch.hub.get_dir()>/checkpoints`` (that is ``$TORCH_HOME/hub/checkpoints``, by default
``~/.cache/torch/hub/checkpoints``) or in an explicit ``weights_dir``:

=================  ==========================  ====================================
method             extractor                   matcher
=================  ==========================  ====================================
disk-lightglue     ``depth-save.pth``          ``disk_lightglue_v0-1_arxiv-pth``
aliked-lightglue   ``aliked-n16.pth``          ``aliked_lightglue_v0-1_arxiv-pth``
=================  ==========================  ====================================

(The LightGlue names really end in ``-pth``: kornia builds them with
``f"{weights}_{version}.pth".replace(".", "-")``.) So a machine where kornia has once
downloaded the weights - or a copy of that folder - works here unchanged. The models are built
with random weights and the files are loaded into them the way kornia loads them, including
LightGlue's renaming of its old ``self_attn.i`` / ``cross_attn.i`` keys.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlparse

import numpy as np
from PIL import Image

from wildreid.local.base import LEARNED, LOCAL_METHODS, LocalFeatures, LocalMethod, working_image
from wildreid.util.errors import BackboneUnavailable

if TYPE_CHECKING:  # torch itself is imported where it is used: listing the methods must not load it
    import torch

# Keypoints never lie closer than this to the image border: DISK's NMS window is 5 pixels and
# ALIKED's NMS radius is 2, and both drop maxima whose window runs off the image.
_BORDER = 2


@dataclass(frozen=True)
class _Weights:
    """One weights file: where kornia caches it and where it comes from."""

    role: str  # "DISK detector", "LightGlue matcher for DISK", ...
    file_name: str  # the name kornia saves it under in <hub dir>/checkpoints
    url: str  # kornia's primary source, for a manual download


@dataclass(frozen=True)
class _Spec:
    extractor: _Weights
    matcher: _Weights
    lightglue_features: str  # the key of kornia's LightGlue.features
    fetch: str  # the Python that makes kornia download both files


def _lightglue_weights(features: str) -> _Weights:
    from kornia.core.download import hf_url
    from kornia.feature import LightGlue

    # Exactly kornia's LightGlue.__init__: the cache name keeps the old release version, and
    # the replace turns every dot into a dash, the one of ".pth" included.
    file_name = f"{LightGlue.features[features]['weights']}_{LightGlue.version}.pth".replace(".", "-")
    url = hf_url("lightglue", f"{features.replace('-', '_')}_lightglue.pth")
    return _Weights(f"LightGlue matcher for {features.upper()}", file_name, url)


def _disk_spec() -> _Spec:
    from kornia.feature.disk.disk import urls

    # kornia passes several URLs without a file name, so the cache name is the first URL's.
    url = urls["depth"][0]
    extractor = _Weights("DISK detector ('depth' checkpoint)", Path(urlparse(url).path).name, url)
    return _Spec(
        extractor,
        _lightglue_weights("disk"),
        "disk",
        "import kornia.feature as KF; KF.DISK.from_pretrained('depth'); KF.LightGlue('disk')",
    )


ALIKED_MODEL = "aliked-n16"  # the ALIKED variant LightGlue's 'aliked' weights were trained on
# kornia's and LightGlue's default ALIKED detection threshold (threshold mode, capped at
# max_keypoints; see ALIKED's Convention block).
ALIKED_THRESHOLD = 0.2


def _aliked_spec() -> _Spec:
    from kornia.feature.aliked.aliked import _CHECKPOINT_URLS

    url = _CHECKPOINT_URLS[0].format(ALIKED_MODEL)
    extractor = _Weights(f"ALIKED detector ('{ALIKED_MODEL}')", Path(urlparse(url).path).name, url)
    return _Spec(
        extractor,
        _lightglue_weights("aliked"),
        "aliked",
        f"import kornia.feature as KF; KF.ALIKED.from_pretrained('{ALIKED_MODEL}'); KF.LightGlue('aliked')",
    )


SPECS: dict[str, Callable[[], _Spec]] = {"disk-lightglue": _disk_spec, "aliked-lightglue": _aliked_spec}


def weights_files(name: str, weights_dir: str | Path | None = None) -> list[Path]:
    """Where the two weights files of method ``name`` are looked for (extractor, matcher)."""
    spec = SPECS[name]()
    folder = _weights_folder(weights_dir)
    return [folder / spec.extractor.file_name, folder / spec.matcher.file_name]


def _weights_folder(weights_dir: str | Path | None) -> Path:
    if weights_dir is not None:
        return Path(weights_dir).expanduser()
    import torch

    # get_dir() reads TORCH_HOME (and XDG_CACHE_HOME) at each call, as kornia's downloader does.
    return Path(torch.hub.get_dir()) / "checkpoints"


def missing_weights_advice(name: str, weights_dir: str | Path | None = None) -> str | None:
    """None when both weights files of method ``name`` are on disk, else what to fetch and where."""
    spec, folder = SPECS[name](), _weights_folder(weights_dir)
    missing = [w for w in (spec.extractor, spec.matcher) if not (folder / w.file_name).is_file()]
    if not missing:
        return None
    import kornia

    what = "; ".join(f"the {w.role} weights '{w.file_name}' are not at {folder / w.file_name}" for w in missing)
    manual = "; ".join(f"download {w.url} and save it as {folder / w.file_name}" for w in missing)
    return (
        f"'{name}' cannot start: {what}. wildreid never downloads weights at run time. To get them, "
        f"on a machine with internet access and kornia {kornia.__version__} run "
        f'`python -c "{spec.fetch}"`, then copy {spec.extractor.file_name} and '
        f"{spec.matcher.file_name} from that machine's ~/.cache/torch/hub/checkpoints/ (or "
        f"$TORCH_HOME/hub/checkpoints/) into {folder}/ here (set TORCH_HOME to use another folder, or "
        f"pass weights_dir); or {manual}."
    )


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    text = f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}"
    return hashlib.sha256(text.encode()).hexdigest()[:10]


class LearnedMethod(LocalMethod):
    """ALIKED or DISK keypoints and descriptors, matched by LightGlue."""

    descriptor_dim = 128  # DISK's default desc_dim and aliked-n16's dim; both LightGlues take 128

    def __init__(
        self,
        name: str,
        max_keypoints: int = 1024,
        max_side: int = 640,
        min_side: int = 320,
        device: str | torch.device | None = None,
        weights_dir: str | Path | None = None,
        filter_threshold: float = 0.1,
        detection_threshold: float = ALIKED_THRESHOLD,
    ):
        import torch

        name = name.lower()
        if name not in SPECS:
            raise KeyError(f"unknown learned local feature method '{name}'; choose one of {', '.join(SPECS)}")
        self.name, self.max_keypoints = name, max_keypoints
        self.max_side, self.min_side = max_side, min_side
        # LightGlue keeps mutual best matches whose assignment probability exceeds this (its own
        # default 0.1); matching only, so it is not part of config_key.
        self.filter_threshold = filter_threshold
        # ALIKED only: a positive value keeps the maxima above it (at most max_keypoints); 0 keeps
        # the max_keypoints strongest ones (kornia's top-k mode), as wildlife-tools' extractor does.
        self.detection_threshold = detection_threshold
        self.device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
        self._spec = SPECS[name]()
        self.weights_dir = _weights_folder(weights_dir)
        extractor_file, matcher_file = self._require_files()
        # Taken when the weights are read, so the key describes the weights actually in memory.
        self._weights_id = _fingerprint(extractor_file)
        self._extractor = self._build_extractor(extractor_file).to(self.device).eval()
        self._matcher = self._build_matcher(matcher_file).to(self.device).eval()
        # torch already spreads one forward pass over every core (or the GPU); running several
        # at once from cache.py's thread pool would only multiply memory, so passes take turns.
        self._lock = threading.Lock()

    # --- weights -------------------------------------------------------------------------

    def _require_files(self) -> tuple[Path, Path]:
        advice = missing_weights_advice(self.name, self.weights_dir)
        if advice is not None:
            raise BackboneUnavailable(advice)
        return self.weights_dir / self._spec.extractor.file_name, self.weights_dir / self._spec.matcher.file_name

    def _read(self, path: Path) -> dict:
        import torch

        try:
            # weights_only: a checkpoint is data; never let unpickling run code.
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:  # noqa: BLE001 - truncated, corrupt, or not a checkpoint at all
            raise BackboneUnavailable(
                f"{path} cannot be read as a PyTorch checkpoint ({type(error).__name__}: {error}). Delete it and "
                f'fetch it again: on a machine with internet access run `python -c "{self._spec.fetch}"`, then '
                f"copy {path.name} from that machine's ~/.cache/torch/hub/checkpoints/ to {path}."
            ) from None
        if not isinstance(checkpoint, dict):
            raise BackboneUnavailable(f"{path} holds a {type(checkpoint).__name__}, not a state dict.")
        return checkpoint

    def _load(self, module: torch.nn.Module, state_dict: dict, path: Path) -> torch.nn.Module:
        """Load like kornia (strict=False) but refuse a file that leaves learned weights random:
        missing derived buffers are harmless, missing parameters mean a wrong or partial file."""
        try:
            incompatible = module.load_state_dict(state_dict, strict=False)
        except RuntimeError as error:  # shape mismatch: another variant of the model
            raise BackboneUnavailable(f"{path} does not fit the {self.name} model: {error}") from None
        parameters = dict(module.named_parameters())
        missing = [key for key in incompatible.missing_keys if key in parameters]
        if missing:
            raise BackboneUnavailable(
                f"{path} lacks {len(missing)} of the {len(parameters)} weight tensors of the {self.name} model "
                f"(first: {', '.join(missing[:3])}); it is not the file kornia {self._spec.fetch!r} saves."
            )
        return module

    def _build_extractor(self, path: Path) -> torch.nn.Module:
        import kornia.feature as KF

        checkpoint = self._read(path)
        if self.name == "disk-lightglue":
            # DISK's released checkpoints keep the network under "extractor" (DISK.from_pretrained).
            if "extractor" not in checkpoint:
                raise BackboneUnavailable(
                    f"{path} has no 'extractor' entry: it is not a DISK checkpoint "
                    f"(found {', '.join(map(str, list(checkpoint)[:5]))})."
                )
            return self._load(KF.DISK(desc_dim=self.descriptor_dim), checkpoint["extractor"], path)
        model = KF.ALIKED(
            ALIKED_MODEL, max_num_keypoints=self.max_keypoints, detection_threshold=self.detection_threshold
        )
        return self._load(model, checkpoint, path)

    def _build_matcher(self, path: Path) -> torch.nn.Module:
        from kornia.feature import LightGlue

        # features=None builds from the configuration alone, so nothing is fetched; weights=None
        # also keeps it from looking for a file inside the kornia package.
        conf = {
            **LightGlue.features[self._spec.lightglue_features],
            "weights": None,
            "filter_threshold": self.filter_threshold,
        }
        matcher = LightGlue(None, **conf)
        state_dict = self._read(path)
        # The same key changes kornia's LightGlue.__init__ makes: xfeat's "matcher." prefix, and
        # the v0.1 release's per-layer "self_attn.i" / "cross_attn.i" modules, since merged into
        # "transformers.i".
        prefix = "matcher."
        state_dict = {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state_dict.items()}
        for i in range(matcher.conf.n_layers):
            pattern = f"self_attn.{i}", f"transformers.{i}.self_attn"
            state_dict = {k.replace(*pattern): v for k, v in state_dict.items()}
            pattern = f"cross_attn.{i}", f"transformers.{i}.cross_attn"
            state_dict = {k.replace(*pattern): v for k, v in state_dict.items()}
        return self._load(matcher, state_dict, path)

    # --- LocalMethod -----------------------------------------------------------------------

    def config_key(self) -> str:
        # Only the extractor's file: the key names cached *features*, which LightGlue's weights
        # do not change.
        # The detection threshold shows only when not the default, so existing caches keep their keys.
        changed = self.name == "aliked-lightglue" and self.detection_threshold != ALIKED_THRESHOLD
        threshold = f"-t{self.detection_threshold:g}" if changed else ""
        return f"{self.name}-k{self.max_keypoints}-s{self.max_side}-{self.min_side}{threshold}-w{self._weights_id}"

    def extract(self, image: Image.Image) -> LocalFeatures:
        import torch

        rgb, scale = working_rgb(image, self.max_side, self.min_side)
        height, width = rgb.shape[:2]
        tensor = torch.from_numpy(rgb).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        with self._lock, torch.inference_mode():
            if self.name == "disk-lightglue":
                # DISK needs sides divisible by 16: zero-pad bottom/right (kornia crops the maps
                # back before NMS, so no keypoint lands in the padding) instead of resizing.
                found = self._extractor(
                    tensor, n=self.max_keypoints, window_size=5, score_threshold=0.0, pad_if_not_divisible=True
                )[0]
            else:
                # ALIKED replicate-pads to multiples of 32 itself and crops the maps back.
                found = self._extractor(tensor)[0]
        if found.keypoints.shape[0] == 0:
            features = LocalFeatures.empty(self.descriptor_dim, scale)
        else:
            features = LocalFeatures(
                found.keypoints.float().cpu().numpy().astype(np.float32),
                found.descriptors.float().cpu().numpy().astype(np.float32),
                scale,
            )
        # LightGlue normalises keypoints by the image size, which LocalFeatures has no field for
        # yet; an attribute works with or without such a field (see _image_size).
        features.image_size = (width, height)
        return features

    def match(self, a: LocalFeatures, b: LocalFeatures) -> np.ndarray:
        return self.match_with_confidence(a, b)[0]

    def match_with_confidence(self, a: LocalFeatures, b: LocalFeatures) -> tuple[np.ndarray, np.ndarray]:
        """LightGlue's mutual matches above filter_threshold and their assignment probabilities."""
        import torch

        if len(a) == 0 or len(b) == 0:
            return np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float32)

        def side(features: LocalFeatures) -> dict:
            return {
                "keypoints": torch.tensor(features.keypoints, dtype=torch.float32, device=self.device)[None],
                "descriptors": torch.tensor(features.descriptors, dtype=torch.float32, device=self.device)[None],
                "image_size": torch.tensor([_image_size(features)], dtype=torch.float32, device=self.device),
            }

        with self._lock, torch.inference_mode():
            out = self._matcher({"image0": side(a), "image1": side(b)})
        matches = out["matches"][0].cpu().numpy().astype(np.int64).reshape(-1, 2)
        return matches, out["scores"][0].float().cpu().numpy().reshape(-1)


@LOCAL_METHODS.register("aliked-lightglue")
def aliked_lightglue(**options) -> LearnedMethod:
    return LearnedMethod("aliked-lightglue", **options)


@LOCAL_METHODS.register("disk-lightglue")
def disk_lightglue(**options) -> LearnedMethod:
    return LearnedMethod("disk-lightglue", **options)


LEARNED.register("aliked-lightglue", lambda weights_dir=None: missing_weights_advice("aliked-lightglue", weights_dir))
LEARNED.register("disk-lightglue", lambda weights_dir=None: missing_weights_advice("disk-lightglue", weights_dir))


def working_rgb(image: Image.Image, max_side: int, min_side: int) -> tuple[np.ndarray, float]:
    """RGB (H, W, 3) uint8 working image, the same size and scale as base.working_image's grey one
    (so keypoints from any method share one frame)."""
    grey, scale = working_image(image, max_side, min_side)
    size = (grey.shape[1], grey.shape[0])
    rgb = image.convert("RGB")
    if size != rgb.size:
        rgb = rgb.resize(size, Image.BICUBIC if scale > 1 else Image.LANCZOS)
    return np.array(rgb), scale  # a writable copy: torch.from_numpy warns on PIL's read-only view


def _image_size(features: LocalFeatures) -> tuple[int, int]:
    """(width, height) of the working image the keypoints were found in.

    Features fresh from ``extract`` carry it. Features read back from the disk cache do not
    (cache.py stores keypoints, descriptors and scale only); for them, the smallest image that
    holds every keypoint plus the border no detector puts keypoints in. With hundreds of
    keypoints spread over the image that is within a few pixels of the real size; and it always
    keeps the normalised keypoints inside [-1, 1], which LightGlue checks.
    """
    size = getattr(features, "image_size", None)
    if size is not None:
        return int(size[0]), int(size[1])
    far = np.floor(features.keypoints.max(axis=0)).astype(int) + 1 + _BORDER
    return int(far[0]), int(far[1])
