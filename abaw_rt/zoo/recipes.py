"""Zoo layer: known-extractor recipes: the public weights the paper used, their contract, preprocessing and source.

Torch-free. A recipe says what a user's real file takes and gives (input rank, size and pixel/sample
preparation; output name and width), where the file comes from, its licence and its sha256 where the
source publishes one (none of these sources does; we never invent one). The same recipe drives the zoo's
reference graph, ``abaw-rt zoo import`` and the spec tables ``abaw-rt zoo build`` writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from abaw_rt.errors import AbawRtError
from abaw_rt.model.config import PAPER_FEATURES, PRESET_FEATURES, FeatureGroup

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NOT_PUBLISHED = "not published"


@dataclass(frozen=True)
class Recipe:
    """One extractor of the paper (the paper's table of features) and the public file a user brings for it."""

    name: str  # feature name (matches the presets in abaw_rt.model.config)
    family: str  # architecture: effnet, dan, iresnet, wav2vec2
    modality: str  # visual or audio
    paper_dim: int  # the dimension the paper states (section 3, features table)
    native_dim: int  # the public network's own output width (differs for eff and wav2vec2)
    paper_output: str  # zoo graph output that has paper_dim
    native_output: str  # zoo graph output that has native_dim
    spec: Mapping[str, Any]  # preprocessing keys of the extractor spec (input_size, mean, std, window, ...)
    arch: Mapping[str, Mapping[str, Any]]  # size ("paper", "tiny") -> architecture arguments
    public_file: str  # what the user downloads
    source: str  # where from (the package never downloads)
    licence: str  # as the source states it
    sha256: str = NOT_PUBLISHED
    public_outputs: str = ""  # what the released file outputs, and what `zoo import` does about it
    classes: int = 0  # classifier width of the released model (0: none)
    release_outputs: tuple[str, ...] = ()  # feature output names of the public release, if not the zoo's
    notes: tuple[str, ...] = field(default_factory=tuple)

    def dim(self, size: str, dims: str = "paper") -> int:
        """Feature width of the zoo graph at ``size`` ("paper"/"tiny") with ``dims`` ("paper"/"native")."""
        a = self.arch[size]
        return int(a["paper_dim" if dims == "paper" else "native_dim"])

    def output(self, dims: str = "paper") -> str:
        return self.paper_output if dims == "paper" else self.native_output


_DAN_SPEC = {"input_size": [224, 224], "crop": "aligned", "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
             "batch": 32}  # fmt: skip
_DAN_ARCH = {
    "paper": {"widths": (64, 128, 256, 512), "paper_dim": 512, "native_dim": 512},
    "tiny": {"widths": (8, 16, 16, 32), "paper_dim": 32, "native_dim": 32},
}
_DAN_SOURCE = "github.com/yaoing/DAN (checkpoints linked from its README; the dict key is 'model_state_dict')"

RECIPES: dict[str, Recipe] = {
    "eff": Recipe(
        name="eff", family="effnet", modality="visual", paper_dim=1280, native_dim=1408,
        paper_output="features", native_output="features",
        spec={"input_size": [260, 260], "crop": "box", "margin": 0.1, "mean": list(IMAGENET_MEAN),
              "std": list(IMAGENET_STD), "batch": 32},
        arch={"paper": {"width": 1.1, "depth": 1.2, "paper_dim": 1280, "native_dim": 1408},
              "tiny": {"width": 0.25, "depth": 0.34, "paper_dim": 16, "native_dim": 24}},
        public_file="enet_b2_8.onnx", classes=8,
        source="github.com/sb-ai-lab/EmotiEffLib (formerly HSE-asavchenko/face-emotion-recognition), "
        "models/affectnet_emotions/onnx/; hsemotion-onnx caches it in ~/.hsemotion",
        licence="Apache-2.0 (code; the weights are released with it)",
        public_outputs="the released ONNX gives only the 8 AffectNet logits (input 'input', 260x260); "
        "'zoo import' adds the classifier's input, the pooled 1408-d feature, as output 'features'",
        notes=("EfficientNet-B2's pooled width is 1408; the paper states 1280 (B0's width). The zoo builds the "
               "paper's 1280 by default (--dims paper) and B2's native 1408 with --dims native; a real "
               "HSEmotion file gives 1408, so its checkpoint must be trained with eff dim 1408.",
               "RGB, resized to 260x260, x/255, ImageNet mean/std (hsemotion_onnx.HSEmotionRecognizer.preprocess)"),
    ),
    "affectnet8": Recipe(
        name="affectnet8", family="dan", modality="visual", paper_dim=512, native_dim=512,
        paper_output="features", native_output="features", spec=_DAN_SPEC, arch=_DAN_ARCH,
        public_file="affecnet8_epoch6_acc0.6326.pth (PyTorch state_dict, no ONNX release)", classes=8,
        source=_DAN_SOURCE, licence="as stated in the repository (check it before use)",
        public_outputs="a state_dict; 'zoo import' loads it with torch.load(weights_only=True) into the zoo's DAN "
        "(same keys) and exports outputs 'features' (sum of the attention heads, 512-d) and 'logits'",
        notes=("RGB, 224x224, ToTensor (x/255), ImageNet mean/std (the repository's demo.py)",),
    ),
    "rafdb": Recipe(
        name="rafdb", family="dan", modality="visual", paper_dim=512, native_dim=512,
        paper_output="features", native_output="features", spec=_DAN_SPEC, arch=_DAN_ARCH,
        public_file="the RAF-DB checkpoint (.pth, 7 classes) from the DAN repository", classes=7,
        source=_DAN_SOURCE, licence="as stated in the repository (check it before use)",
        public_outputs="as affectnet8, with 7 classes",
        notes=("RGB, 224x224, x/255, ImageNet mean/std",),
    ),
    "arcface": Recipe(
        name="arcface", family="iresnet", modality="visual", paper_dim=512, native_dim=512,
        paper_output="embedding", native_output="embedding",
        spec={"input_size": [112, 112], "crop": "aligned", "scale": 1.0, "mean": 127.5, "std": 127.5, "batch": 32},
        arch={"paper": {"layers": (3, 4, 14, 3), "widths": (64, 128, 256, 512), "paper_dim": 512, "native_dim": 512},
              "tiny": {"layers": (1, 1, 1, 1), "widths": (8, 8, 16, 16), "paper_dim": 16, "native_dim": 16}},
        public_file="glint360k_r50.onnx (or r100: about twice the FLOPs; antelopev2's glintr100.onnx)",
        source="insightface model zoo (github.com/deepinsight/insightface, arcface_torch / model_zoo)",
        licence="non-commercial research use (insightface models)",
        public_outputs="one output, the 512-d embedding; input names vary ('input.1', 'data'): the spec names it",
        notes=("RGB, 112x112 aligned to the 5-point ArcFace template, (x - 127.5) / 127.5",
               "the paper does not state the depth; the zoo builds r50"),
    ),
    "wav2vec2": Recipe(
        name="wav2vec2", family="wav2vec2", modality="audio", paper_dim=512, native_dim=1024,
        paper_output="extract_features", native_output="hidden",
        spec={"window": 16000, "hop": 640, "stretch": "nearest", "batch": 8},
        arch={"paper": {"hidden": 1024, "layers": 12, "heads": 16, "ffn": 4096, "conv": 512, "pos_kernel": 128,
                        "pos_groups": 16, "paper_dim": 512, "native_dim": 1024},
              "tiny": {"hidden": 32, "layers": 1, "heads": 2, "ffn": 64, "conv": 16, "pos_kernel": 16,
                       "pos_groups": 4, "paper_dim": 16, "native_dim": 32}},
        public_file="audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim (Hugging Face; ONNX via audonnx)",
        release_outputs=("hidden_states",),
        source="huggingface.co/audeering (PyTorch weights; 'zoo import DIR --as wav2vec2' exports a local copy)",
        licence="CC-BY-NC-SA-4.0 as reported (unverified here)",
        public_outputs="audonnx's ONNX gives the pooled hidden state (1024-d) and 3 logits; the paper's 512 matches "
        "the convolutional encoder's width, output 'extract_features' of the zoo graph",
        notes=("16 kHz mono, each window normalised to zero mean and unit variance (in the zoo graph)",
               "1 s windows every 40 ms (one per frame at 25 fps), stretched to the frames by nearest time "
               "(the authors' interpolation); the cost scales with window / hop"),
    ),
}  # fmt: skip


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise AbawRtError(f"unknown extractor recipe {name!r}; expected one of {sorted(RECIPES)}")
    return RECIPES[name]


def zoo_features(names, size: str = "paper", dims: str = "paper") -> tuple[FeatureGroup, ...]:
    """The FeatureGroups the zoo's graphs give (a checkpoint config's ``features``) for these extractors."""
    return tuple(FeatureGroup(n, recipe(n).dim(size, dims), recipe(n).modality) for n in names)


def preset_features(preset: str, size: str = "paper", dims: str = "paper") -> tuple[FeatureGroup, ...]:
    """A preset's features at the zoo's widths (at paper size and dims: exactly the preset's)."""
    if preset not in PRESET_FEATURES:
        raise AbawRtError(f"unknown preset {preset!r}; expected one of {sorted(PRESET_FEATURES)}")
    return zoo_features(PRESET_FEATURES[preset][0], size, dims)


def spec_table(r: Recipe, onnx: str, dim: int, output: str, input_name: str | None = None) -> dict:
    """An ``[[extractor]]`` table (plain dict for ``write_spec``) for a graph that follows recipe ``r``."""
    table = {"name": r.name, "modality": r.modality, "onnx": onnx, "dim": dim, "output": output}
    if input_name:
        table["input"] = input_name
    return {**table, **r.spec}


def check_recipes_match_presets() -> None:
    """The recipes' paper widths are those of the presets (abaw_rt.model.config.PAPER_FEATURES)."""
    for name, r in RECIPES.items():
        f = PAPER_FEATURES[name]
        if (f.dim, f.modality) != (r.paper_dim, r.modality) or r.dim("paper") != r.paper_dim:
            raise AbawRtError(f"recipe '{name}': paper dim {r.paper_dim} but preset feature is {f}")
